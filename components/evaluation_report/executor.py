"""Executor of EvaluationReport: reads each evaluation.json, writes the report folder."""

import os

from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils

from components.keys import RELAIMPR_BASE_KEY, REPORT_KEY, TRANSFER_REPORT_KEY
from models import artifact_io, registry
from components.evaluation_report.report import write_report
from components.model_evaluator.executor import EVALUATION_FILE


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict, output_dict, exec_properties):
        evaluations = {}
        # The report's columns: the registry's order (models registered since this run was built last).
        known = registry.names()
        names = sorted((k for k in input_dict if k != TRANSFER_REPORT_KEY and input_dict[k]),
                       key=lambda n: (known.index(n) if n in known else len(known), n))
        for name in names:
            channel = input_dict[name]
            evaluations[name] = artifact_io.read_json(os.path.join(artifact_utils.get_single_uri(channel),
                                                                   EVALUATION_FILE))
        transfer = None
        if input_dict.get(TRANSFER_REPORT_KEY):
            path = os.path.join(artifact_utils.get_single_uri(input_dict[TRANSFER_REPORT_KEY]), "transfer.json")
            if fileio.exists(path):
                transfer = artifact_io.read_json(path)
        out = artifact_utils.get_single_uri(output_dict[REPORT_KEY])
        files = write_report(evaluations, out, transfer, exec_properties.get(RELAIMPR_BASE_KEY) or None)
        logging.info("evaluation report in %s\n%s", out, artifact_io.read_text(files["text"]))
