"""EvaluationReport: the last step of a run; every ModelEvaluator's record in one report.

TFX channels are named in the spec, so the spec has one optional input per model
the pipeline can train (KEEP, SAMD and the unified registry); the pipeline
passes those it trained.
"""

from tfx import types as tfx_types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import component_spec, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components import artifacts
from components.evaluation_report import executor
from components.evaluation_report.executor import MODEL_NAMES
from components.keys import RELAIMPR_BASE_KEY, REPORT_KEY, TRANSFER_REPORT_KEY


class EvaluationReportSpec(component_spec.ComponentSpec):
    PARAMETERS = {RELAIMPR_BASE_KEY: ExecutionParameter(type=str, optional=True)}
    INPUTS = {
        **{name: ChannelParameter(type=standard_artifacts.ModelEvaluation, optional=True) for name in MODEL_NAMES},
        TRANSFER_REPORT_KEY: ChannelParameter(type=artifacts.TransferReport, optional=True),
    }
    OUTPUTS = {REPORT_KEY: ChannelParameter(type=artifacts.EvaluationReport)}


class EvaluationReport(base_component.BaseComponent):
    """Args: evaluations ({model name: ModelEvaluator output}), SAMD's transfer_report,
    relaimpr_base (the model RelaImpr is measured against; default shared_bottom)."""

    SPEC_CLASS = EvaluationReportSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, evaluations, transfer_report=None, relaimpr_base: str = "shared_bottom"):
        unknown = set(evaluations) - set(MODEL_NAMES)
        if unknown:
            raise ValueError(f"no report input for {sorted(unknown)}; known: {MODEL_NAMES}")
        super().__init__(spec=EvaluationReportSpec(
            **evaluations, transfer_report=transfer_report, relaimpr_base=relaimpr_base,
            report=tfx_types.Channel(type=artifacts.EvaluationReport)))
