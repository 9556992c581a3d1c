"""EvaluationReport: the last step of a run; every ModelEvaluator's record in one report.

TFX channels are named in the spec, so each EvaluationReport gets a spec class with
one input per model it is given (each a registered model, models/registry.py).
"""

from tfx import types as tfx_types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import component_spec, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components import artifacts
from components.evaluation_report import executor
from components.keys import RELAIMPR_BASE_KEY, REPORT_KEY, TRANSFER_REPORT_KEY
from models import registry


class EvaluationReportSpec(component_spec.ComponentSpec):
    PARAMETERS = {RELAIMPR_BASE_KEY: ExecutionParameter(type=str, optional=True)}
    INPUTS = {TRANSFER_REPORT_KEY: ChannelParameter(type=artifacts.TransferReport, optional=True)}
    OUTPUTS = {REPORT_KEY: ChannelParameter(type=artifacts.EvaluationReport)}


def spec_class(models):
    """EvaluationReportSpec with one ModelEvaluation input per model of `models`."""
    inputs = {name: ChannelParameter(type=standard_artifacts.ModelEvaluation) for name in models}
    return type("EvaluationReportSpec", (EvaluationReportSpec,), {"INPUTS": {**EvaluationReportSpec.INPUTS, **inputs}})


class EvaluationReport(base_component.BaseComponent):
    """Args: evaluations ({model name: ModelEvaluator output}), SAMD's transfer_report,
    relaimpr_base (the model RelaImpr is measured against; default shared_bottom)."""

    SPEC_CLASS = EvaluationReportSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, evaluations, transfer_report=None, relaimpr_base: str = "shared_bottom"):
        unknown = sorted(set(evaluations) - set(registry.names()))
        if unknown:
            raise ValueError(f"no report input for {unknown}: not in models.registry ({list(registry.names())})")
        super().__init__(spec=spec_class(evaluations)(
            **evaluations, transfer_report=transfer_report, relaimpr_base=relaimpr_base,
            report=tfx_types.Channel(type=artifacts.EvaluationReport)))
