"""ValidationGate: stops the pipeline when ExampleValidator found anomalies.

TFX 1.16's ExampleValidator records anomalies (and a `blessed` property) but does
not stop anything; Transform and Trainer would go on. Make Transform depend on this
gate (`transform.add_upstream_node(gate)`) so no model is trained on such data.
"""

from tfx.dsl.components.base import base_component, executor_spec
from tfx import types as tfx_types
from tfx.types import component_spec, standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.standard_component_specs import ANOMALIES_KEY

from components import artifacts
from components.keys import VERDICT_KEY
from components.validation_gate import executor


class ValidationGateSpec(component_spec.ComponentSpec):
    PARAMETERS = {}
    INPUTS = {ANOMALIES_KEY: ChannelParameter(type=standard_artifacts.ExampleAnomalies)}
    OUTPUTS = {VERDICT_KEY: ChannelParameter(type=artifacts.DataValidationVerdict)}


class ValidationGate(base_component.BaseComponent):
    SPEC_CLASS = ValidationGateSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, anomalies):
        super().__init__(
            spec=ValidationGateSpec(
                anomalies=anomalies,
                verdict=tfx_types.Channel(type=artifacts.DataValidationVerdict),
            )
        )
