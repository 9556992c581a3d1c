"""ValidationGate's executor: each split's anomalies read from ExampleValidator's artifact; any stops the run."""

import json
import os

import pytest
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.dsl.io import fileio
from tfx.types import standard_artifacts
from tfx.types.standard_component_specs import ANOMALIES_KEY

from components.artifacts import DataValidationVerdict
from components.keys import VERDICT_KEY
from components.validation_gate.executor import DataAnomalyError, Executor
from tests.components import artifact, ram_dir


def _anomalies(root, per_split):
    for split, anomalies in per_split.items():
        folder = os.path.join(root, f"Split-{split}")
        fileio.makedirs(folder)
        with fileio.open(os.path.join(folder, "SchemaDiff.pb"), "wb") as f:
            f.write(anomalies.SerializeToString())
    return artifact(standard_artifacts.ExampleAnomalies, root, list(per_split))


def _with(feature, short, description):
    a = anomalies_pb2.Anomalies()
    info = a.anomaly_info[feature]
    info.short_description, info.description = short, description
    return a


@pytest.fixture(params=["local", "ram"])
def root(request, tmp_path):
    return str(tmp_path) if request.param == "local" else ram_dir("gate")


def test_clean_splits_pass_and_write_an_empty_verdict(root):
    anomalies = _anomalies(os.path.join(root, "anomalies"), {"train": anomalies_pb2.Anomalies(),
                                                            "test": anomalies_pb2.Anomalies()})
    verdict = artifact(DataValidationVerdict, os.path.join(root, "verdict"))
    Executor().Do({ANOMALIES_KEY: [anomalies]}, {VERDICT_KEY: [verdict]}, {})
    with fileio.open(os.path.join(verdict.uri, "verdict.json")) as f:
        assert json.loads(f.read()) == {}


def test_an_anomaly_stops_the_run_naming_split_and_feature_and_is_recorded(root):
    anomalies = _anomalies(os.path.join(root, "anomalies"), {
        "train": anomalies_pb2.Anomalies(),
        "test": _with("item_price", "Out-of-range values", "Unexpectedly large value: 1e12.")})
    verdict = artifact(DataValidationVerdict, os.path.join(root, "verdict"))
    with pytest.raises(DataAnomalyError, match=r"\[test\] item_price: Out-of-range values: Unexpectedly large"):
        Executor().Do({ANOMALIES_KEY: [anomalies]}, {VERDICT_KEY: [verdict]}, {})
    with fileio.open(os.path.join(verdict.uri, "verdict.json")) as f:
        assert json.loads(f.read()) == {"test": {"item_price": "Out-of-range values: Unexpectedly large value: 1e12."}}
