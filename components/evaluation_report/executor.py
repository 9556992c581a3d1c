"""Executor of EvaluationReport: reads each evaluation.json, writes the report folder."""

import os

from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils

from models import artifact_io
from components.evaluation_report.report import write_report
from components.model_evaluator.executor import EVALUATION_FILE
from trainers.unified import MODELS

MODEL_NAMES = ("keep_general", "samd", *MODELS, "keep_downstream")  # also the report's column order


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict, output_dict, exec_properties):
        evaluations = {}
        for name in MODEL_NAMES:  # a stable column order
            channel = input_dict.get(name)
            if not channel:
                continue
            evaluations[name] = artifact_io.read_json(os.path.join(artifact_utils.get_single_uri(channel),
                                                                   EVALUATION_FILE))
        transfer = None
        if input_dict.get("transfer_report"):
            path = os.path.join(artifact_utils.get_single_uri(input_dict["transfer_report"]), "transfer.json")
            if fileio.exists(path):
                transfer = artifact_io.read_json(path)
        out = artifact_utils.get_single_uri(output_dict["report"])
        files = write_report(evaluations, out, transfer, exec_properties.get("relaimpr_base") or None)
        logging.info("evaluation report in %s\n%s", out, artifact_io.read_text(files["text"]))
