from components.knowledge_pusher.component import KnowledgePusher  # noqa: F401
