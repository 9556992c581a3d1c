"""KnowledgePusher: pushes the General Knowledge Center's cache as TF Serving model `keep_knowledge`.

The version folder is the cache's own `knowledge_version` (not the push time, as in
TFX's Pusher), so what a downstream model records as "trained with version v" is
the version a client asks TF Serving for. The newest `versions_kept` versions (5,
KEEP's limit) stay on disk and in models.config (`latest { num_versions: 5 }`):
a downstream model trained on any of the last five caches can still be served.
"""

from tfx import types as tfx_types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import component_spec, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.types.standard_component_specs import PUSHED_MODEL_KEY

from components.keys import KNOWLEDGE_KEY, SERVING_DIR_KEY, VERSIONS_KEPT_KEY
from components.knowledge_pusher import executor


class KnowledgePusherSpec(component_spec.ComponentSpec):
    PARAMETERS = {SERVING_DIR_KEY: ExecutionParameter(type=str),
                  VERSIONS_KEPT_KEY: ExecutionParameter(type=int, optional=True)}
    INPUTS = {KNOWLEDGE_KEY: ChannelParameter(type=standard_artifacts.Model)}
    OUTPUTS = {PUSHED_MODEL_KEY: ChannelParameter(type=standard_artifacts.PushedModel)}


class KnowledgePusher(base_component.BaseComponent):
    SPEC_CLASS = KnowledgePusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, knowledge, serving_dir: str, versions_kept: int = executor.VERSIONS_KEPT):
        super().__init__(spec=KnowledgePusherSpec(
            knowledge=knowledge, serving_dir=serving_dir, versions_kept=int(versions_kept),
            pushed_model=tfx_types.Channel(type=standard_artifacts.PushedModel)))
