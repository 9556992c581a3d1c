"""Executor of SamdTrainer: resolves the artifacts' paths and calls trainers.samd.run."""

import json
import os

from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.types.standard_component_specs import CUSTOM_CONFIG_KEY, EXAMPLES_KEY, MODEL_KEY, TRANSFORM_GRAPH_KEY
from tfx.utils import path_utils

from components.keys import (EVAL_STEPS_KEY, SCENARIO_TABLE_KEY, SIMILARITY_KEY, TEACHER_KEY, TRAIN_STEPS_KEY,
                             TRANSFER_REPORT_KEY)
from models import artifact_io
from trainers import samd as samd_trainer
from trainers.generic import keras_model_dir
from schemas.scenarios import SCENARIOS_FILE


def _split_pattern(examples, split):
    return os.path.join(artifact_utils.get_split_uri(examples, split), "*")


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict, output_dict, exec_properties):
        examples = input_dict[EXAMPLES_KEY]
        teacher_uri = artifact_utils.get_single_uri(input_dict[TEACHER_KEY])
        teacher_dir = keras_model_dir(path_utils.serving_model_path(teacher_uri))
        if not fileio.exists(os.path.join(teacher_dir, "config.json")):
            raise FileNotFoundError(f"{teacher_dir}: the teacher model has no Keras weights (train KEEP first)")
        similarity = None
        if input_dict.get(SIMILARITY_KEY):
            path = os.path.join(artifact_utils.get_single_uri(input_dict[SIMILARITY_KEY]), "similarity.json")
            similarity = artifact_io.read_json(path)
        model_uri = artifact_utils.get_single_uri(output_dict[MODEL_KEY])
        report_uri = artifact_utils.get_single_uri(output_dict[TRANSFER_REPORT_KEY])
        report = samd_trainer.run(
            train_pattern=_split_pattern(examples, "train"),
            eval_pattern=_split_pattern(examples, "validation"),
            transform_graph=artifact_utils.get_single_uri(input_dict[TRANSFORM_GRAPH_KEY]),
            teacher_keras_dir=teacher_dir,
            scenarios_csv=os.path.join(artifact_utils.get_single_uri(input_dict[SCENARIO_TABLE_KEY]), SCENARIOS_FILE),
            output_dir=path_utils.serving_model_path(model_uri),
            report_dir=report_uri,
            train_steps=exec_properties[TRAIN_STEPS_KEY],
            eval_steps=exec_properties[EVAL_STEPS_KEY],
            similarity=similarity,
            custom=json.loads(exec_properties.get(CUSTOM_CONFIG_KEY) or "{}"),
        )
        logging.info("SAMD trained %d students in %.1fs", len(report["students"]), report["train_seconds"])
