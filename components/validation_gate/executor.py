"""Executor of ValidationGate: reads each split's anomalies and fails, naming them."""

import json
import os
from typing import Any, Dict, List

from absl import logging
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils


class DataAnomalyError(RuntimeError):
    """The examples break the schema; the message lists every anomaly."""


def read_anomalies(artifact) -> Dict[str, Dict[str, str]]:
    """{split: {feature: "short description: description"}} for one ExampleAnomalies artifact."""
    found = {}
    for split in artifact_utils.decode_split_names(artifact.split_names):
        uri = artifact_utils.get_split_uri([artifact], split)
        path = os.path.join(uri, "SchemaDiff.pb")
        if not os.path.exists(path):
            path = io_utils.get_only_uri_in_dir(uri)
        anomalies = anomalies_pb2.Anomalies()
        with open(path, "rb") as f:
            anomalies.ParseFromString(f.read())
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
        artifact = artifact_utils.get_single_instance(input_dict["anomalies"])
        found = read_anomalies(artifact)
        out = artifact_utils.get_single_uri(output_dict["verdict"])
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "verdict.json"), "w") as f:
            json.dump(found, f, indent=1, sort_keys=True)
        if found:
            lines = [f"  [{split}] {feature}: {text}" for split, per in found.items() for feature, text in per.items()]
            message = "the examples break schemas/schema.pbtxt; stopping before training:\n" + "\n".join(lines)
            logging.error(message)
            raise DataAnomalyError(message)
        logging.info("no anomalies in %s", artifact.uri)
