"""SamdPusher: pushes every SAMD student as its own TF Serving model `samd_<scenario>`."""

from tfx import types as tfx_types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import component_spec, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.types.standard_component_specs import MODEL_BLESSING_KEY, MODEL_KEY, PUSHED_MODEL_KEY

from components.keys import SERVING_DIR_KEY
from components.samd_pusher import executor


class SamdPusherSpec(component_spec.ComponentSpec):
    PARAMETERS = {SERVING_DIR_KEY: ExecutionParameter(type=str)}
    INPUTS = {MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
              # ModelEvaluator's blessing: only the students it lists as blessed are pushed.
              MODEL_BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing, optional=True)}
    OUTPUTS = {PUSHED_MODEL_KEY: ChannelParameter(type=standard_artifacts.PushedModel)}


class SamdPusher(base_component.BaseComponent):
    SPEC_CLASS = SamdPusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, model, serving_dir: str, model_blessing=None):
        super().__init__(spec=SamdPusherSpec(model=model, serving_dir=serving_dir, model_blessing=model_blessing,
                                             pushed_model=tfx_types.Channel(type=standard_artifacts.PushedModel)))
