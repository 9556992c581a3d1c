from components.knowledge_center.component import KnowledgeCenter  # noqa: F401
