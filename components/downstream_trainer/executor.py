"""Executor of DownstreamTrainer: resolves paths and the cache version, calls trainers.downstream.run."""

import json
import os

from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.types.standard_component_specs import (BASE_MODEL_KEY, CUSTOM_CONFIG_KEY, EXAMPLES_KEY, MODEL_KEY,
                                                TRANSFORM_GRAPH_KEY)
from tfx.utils import path_utils

from components.keys import KNOWLEDGE_KEY, SCENARIO_TABLE_KEY, TRAIN_STEPS_KEY
from trainers import downstream
from schemas.scenarios import SCENARIOS_FILE


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict, output_dict, exec_properties):
        examples = input_dict[EXAMPLES_KEY]
        knowledge_dir = knowledge_version = base_model_dir = None
        if input_dict.get(KNOWLEDGE_KEY):
            knowledge = artifact_utils.get_single_instance(input_dict[KNOWLEDGE_KEY])
            knowledge_dir = path_utils.serving_model_path(knowledge.uri)
            knowledge_version = knowledge.get_int_custom_property("knowledge_version")
        if input_dict.get(BASE_MODEL_KEY):
            base_model_dir = artifact_utils.get_single_uri(input_dict[BASE_MODEL_KEY])
        out = artifact_utils.get_single_instance(output_dict[MODEL_KEY])
        record = downstream.run(
            train_pattern=os.path.join(artifact_utils.get_split_uri(examples, "train"), "*"),
            eval_pattern=os.path.join(artifact_utils.get_split_uri(examples, "validation"), "*"),
            transform_graph=artifact_utils.get_single_uri(input_dict[TRANSFORM_GRAPH_KEY]),
            scenarios_csv=os.path.join(artifact_utils.get_single_uri(input_dict[SCENARIO_TABLE_KEY]), SCENARIOS_FILE),
            output_dir=path_utils.serving_model_path(out.uri),
            record_dir=out.uri,
            train_steps=exec_properties[TRAIN_STEPS_KEY],
            custom=json.loads(exec_properties.get(CUSTOM_CONFIG_KEY) or "{}"),
            knowledge_dir=knowledge_dir, knowledge_version=knowledge_version, base_model_dir=base_model_dir,
        )
        if record["plugged"]:
            out.set_int_custom_property("knowledge_version", int(knowledge_version))
        out.set_int_custom_property("warm_started", int(record["warm_start"]["restored"] > 0))
        logging.info("downstream model: %s", {k: record[k] for k in ("plugged", "knowledge_version", "train_rows")})
