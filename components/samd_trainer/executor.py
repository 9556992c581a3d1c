"""Executor of SamdTrainer: resolves the artifacts' paths and calls trainers.samd.run."""

import json
import os

from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.utils import path_utils

from models import artifact_io
from trainers import samd as samd_trainer
from trainers.generic import keras_model_dir
from schemas.scenarios import SCENARIOS_FILE


def _split_pattern(examples, split):
    return os.path.join(artifact_utils.get_split_uri(examples, split), "*")


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict, output_dict, exec_properties):
        examples = input_dict["examples"]
        teacher_uri = artifact_utils.get_single_uri(input_dict["teacher"])
        teacher_dir = keras_model_dir(path_utils.serving_model_path(teacher_uri))
        if not fileio.exists(os.path.join(teacher_dir, "config.json")):
            raise FileNotFoundError(f"{teacher_dir}: the teacher model has no Keras weights (train KEEP first)")
        similarity = None
        if input_dict.get("similarity"):
            path = os.path.join(artifact_utils.get_single_uri(input_dict["similarity"]), "similarity.json")
            similarity = artifact_io.read_json(path)
        model_uri = artifact_utils.get_single_uri(output_dict["model"])
        report_uri = artifact_utils.get_single_uri(output_dict["transfer_report"])
        report = samd_trainer.run(
            train_pattern=_split_pattern(examples, "train"),
            eval_pattern=_split_pattern(examples, "validation"),
            transform_graph=artifact_utils.get_single_uri(input_dict["transform_graph"]),
            teacher_keras_dir=teacher_dir,
            scenarios_csv=os.path.join(artifact_utils.get_single_uri(input_dict["scenario_table"]), SCENARIOS_FILE),
            output_dir=path_utils.serving_model_path(model_uri),
            report_dir=report_uri,
            train_steps=exec_properties["train_steps"],
            eval_steps=exec_properties["eval_steps"],
            similarity=similarity,
            custom=json.loads(exec_properties.get("custom_config") or "{}"),
        )
        logging.info("SAMD trained %d students in %.1fs", len(report["students"]), report["train_seconds"])
