"""Artifact types of the custom components."""

from tfx.types import artifact


class RawDataReport(artifact.Artifact):
    """report.json: the files, spans and rows per scenario that passed the raw-data check."""

    TYPE_NAME = "keep_samd.RawDataReport"  # KFP v2 wants <namespace>.<Name>


class ScenarioTable(artifact.Artifact):
    """scenarios.csv: the scenario table RawDataCheck validated (schemas/scenarios.py reads it).

    Custom properties: `scenarios` (how many), `super_scenario` (the id of the one
    with role super). Components read the scenarios from this artifact, so ML Metadata
    records which table a model was trained and evaluated with, and no pod needs the
    raw data folder mounted for it.
    """

    TYPE_NAME = "keep_samd.ScenarioTable"


class DataValidationVerdict(artifact.Artifact):
    """verdict.json: the anomalies found per split (empty when the data passed)."""

    TYPE_NAME = "keep_samd.DataValidationVerdict"


class TransferReport(artifact.Artifact):
    """transfer.json / transfer.npz: SAMD's W_T^i, T_i, C_i, p_i per scenario, and training facts."""

    TYPE_NAME = "keep_samd.TransferReport"


class EvaluationReport(artifact.Artifact):
    """report.md / report.html / report.txt, metrics.json and PNG plots of a run's evaluations."""

    TYPE_NAME = "keep_samd.EvaluationReport"
