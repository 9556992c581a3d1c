"""Executor of RawDataCheck: runs `checks.check_data_root` and writes its report."""

import json
import os
from typing import Any, Dict, List

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils

from components.keys import DATA_ROOT_KEY, REPORT_KEY, SCENARIOS_KEY, SPANS_KEY
from models import artifact_io
from components.raw_data_check import checks


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        data_root = exec_properties[DATA_ROOT_KEY]
        spans = exec_properties.get(SPANS_KEY)
        spans = json.loads(spans) if spans else None
        try:
            report = checks.check_data_root(data_root, spans)
        except checks.RawDataError as e:
            logging.error("raw data check failed: %s", e)
            raise
        out = artifact_utils.get_single_uri(output_dict[REPORT_KEY])
        artifact_io.write_json(os.path.join(out, "report.json"), report, sort_keys=True)
        table = artifact_utils.get_single_instance(output_dict[SCENARIOS_KEY])
        fileio.makedirs(table.uri)
        # The validated file itself, byte for byte: schemas/scenarios.py is its one parser.
        copy = os.path.join(table.uri, checks.SCENARIOS_FILE)
        fileio.copy(os.path.join(data_root, checks.SCENARIOS_FILE), copy, overwrite=True)
        if checks.read_scenarios(copy) != report["scenarios"]:  # changed while we read it
            raise checks.RawDataError(f"{os.path.join(data_root, checks.SCENARIOS_FILE)}: changed during the check")
        table.set_int_custom_property("scenarios", len(report["scenarios"]))
        table.set_string_custom_property("super_scenario", next(
            sid for sid, row in report["scenarios"].items() if row["role"] == "super"))
        logging.info("raw data check passed: %d rows in %d span(s) under %s", report["rows"],
                     len(report["spans"]), data_root)
