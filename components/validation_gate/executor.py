"""Executor of ValidationGate: reads each split's anomalies and fails, naming them."""

import os
from typing import Any, Dict, List

from absl import logging
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.types.standard_component_specs import ANOMALIES_KEY
from tfx.utils import io_utils

from components.keys import VERDICT_KEY
from models import artifact_io


class DataAnomalyError(RuntimeError):
    """The examples break the schema; the message lists every anomaly."""


def read_anomalies(artifact) -> Dict[str, Dict[str, str]]:
    """{split: {feature: "short description: description"}} for one ExampleAnomalies artifact."""
    found = {}
    for split in artifact_utils.decode_split_names(artifact.split_names):
        uri = artifact_utils.get_split_uri([artifact], split)
        path = os.path.join(uri, "SchemaDiff.pb")
        if not fileio.exists(path):
            path = io_utils.get_only_uri_in_dir(uri)
        anomalies = anomalies_pb2.Anomalies()
        anomalies.ParseFromString(artifact_io.read_bytes(path))
        per = {name: f"{info.short_description}: {info.description}" for name, info in anomalies.anomaly_info.items()}
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            per["<dataset>"] = f"{info.short_description}: {info.description}"
        if per:
            found[split] = per
    return found


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        artifact = artifact_utils.get_single_instance(input_dict[ANOMALIES_KEY])
        found = read_anomalies(artifact)
        out = artifact_utils.get_single_uri(output_dict[VERDICT_KEY])
        artifact_io.write_json(os.path.join(out, "verdict.json"), found, sort_keys=True)
        if found:
            lines = [f"  [{split}] {feature}: {text}" for split, per in found.items() for feature, text in per.items()]
            message = "the examples break schemas/schema.pbtxt; stopping before training:\n" + "\n".join(lines)
            logging.error(message)
            raise DataAnomalyError(message)
        logging.info("no anomalies in %s", artifact.uri)
