"""SamdPusher: pushes every SAMD student as its own TF Serving model `samd_<scenario>`."""

from tfx import types as tfx_types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import component_spec, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.samd_pusher import executor


class SamdPusherSpec(component_spec.ComponentSpec):
    PARAMETERS = {"serving_dir": ExecutionParameter(type=str)}
    INPUTS = {"model": ChannelParameter(type=standard_artifacts.Model),
              # ModelEvaluator's blessing: only the students it lists as blessed are pushed.
              "model_blessing": ChannelParameter(type=standard_artifacts.ModelBlessing, optional=True)}
    OUTPUTS = {"pushed_model": ChannelParameter(type=standard_artifacts.PushedModel)}


class SamdPusher(base_component.BaseComponent):
    SPEC_CLASS = SamdPusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, model, serving_dir: str, model_blessing=None):
        super().__init__(spec=SamdPusherSpec(model=model, serving_dir=serving_dir, model_blessing=model_blessing,
                                             pushed_model=tfx_types.Channel(type=standard_artifacts.PushedModel)))
