"""Artifact types of the custom components."""

from tfx.types import artifact


class RawDataReport(artifact.Artifact):
    """report.json: the files, spans and rows per scenario that passed the raw-data check."""

    TYPE_NAME = "keep_samd.RawDataReport"  # KFP v2 wants <namespace>.<Name>


class DataValidationVerdict(artifact.Artifact):
    """verdict.json: the anomalies found per split (empty when the data passed)."""

    TYPE_NAME = "keep_samd.DataValidationVerdict"
