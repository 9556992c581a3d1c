"""KnowledgeCenter: KEEP's General Knowledge Center (GKC) as a TFX component.

Trains the cacheable knowledge heads (decomposition / degeneration / both, KEEP
section 5.2), computes the cache for every user, item and user-category pair of the
data and exports it as a SavedModel of lookup tables (models/keep_cache.py), which
KnowledgePusher pushes as the TF Serving model `keep_knowledge`. Work:
trainers/knowledge_center.py.

The output Model artifact carries `knowledge_version` (the version it is pushed as
and the one its lookups answer), `strategy` and `knowledge_width`: a downstream
trainer reads them to know what it plugs in.
"""

import json

from tfx import types as tfx_types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import component_spec, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.types.standard_component_specs import CUSTOM_CONFIG_KEY, EXAMPLES_KEY, TRANSFORM_GRAPH_KEY

from components.keys import KNOWLEDGE_KEY, TRAIN_STEPS_KEY
from components.knowledge_center import executor


class KnowledgeCenterSpec(component_spec.ComponentSpec):
    PARAMETERS = {
        TRAIN_STEPS_KEY: ExecutionParameter(type=int),
        CUSTOM_CONFIG_KEY: ExecutionParameter(type=str, optional=True),  # JSON: {"knowledge": {config}, "epochs": n}
    }
    INPUTS = {
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),  # transformed
        TRANSFORM_GRAPH_KEY: ChannelParameter(type=standard_artifacts.TransformGraph),
    }
    OUTPUTS = {KNOWLEDGE_KEY: ChannelParameter(type=standard_artifacts.Model)}


class KnowledgeCenter(base_component.BaseComponent):
    SPEC_CLASS = KnowledgeCenterSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, examples, transform_graph, train_steps: int, custom_config=None):
        super().__init__(spec=KnowledgeCenterSpec(
            examples=examples, transform_graph=transform_graph, train_steps=int(train_steps),
            custom_config=json.dumps(custom_config or {}),
            knowledge=tfx_types.Channel(type=standard_artifacts.Model)))
