"""Executor of RawDataCheck: runs `checks.check_data_root` and writes its report."""

import json
import os
from typing import Any, Dict, List

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.raw_data_check import checks


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        data_root = exec_properties["data_root"]
        spans = exec_properties.get("spans")
        spans = json.loads(spans) if spans else None
        try:
            report = checks.check_data_root(data_root, spans)
        except checks.RawDataError as e:
            logging.error("raw data check failed: %s", e)
            raise
        out = artifact_utils.get_single_uri(output_dict["report"])
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "report.json"), "w") as f:
            json.dump(report, f, indent=1, sort_keys=True)
        logging.info("raw data check passed: %d rows in %d span(s) under %s", report["rows"],
                     len(report["spans"]), data_root)
