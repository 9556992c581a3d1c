"""Executor of DownstreamTrainer: resolves paths and the cache version, calls trainers.downstream.run."""

import json
import os

from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from trainers import downstream
from schemas.scenarios import SCENARIOS_FILE


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict, output_dict, exec_properties):
        examples = input_dict["examples"]
        knowledge_dir = knowledge_version = base_model_dir = None
        if input_dict.get("knowledge"):
            knowledge = artifact_utils.get_single_instance(input_dict["knowledge"])
            knowledge_dir = path_utils.serving_model_path(knowledge.uri)
            knowledge_version = knowledge.get_int_custom_property("knowledge_version")
        if input_dict.get("base_model"):
            base_model_dir = artifact_utils.get_single_uri(input_dict["base_model"])
        out = artifact_utils.get_single_instance(output_dict["model"])
        record = downstream.run(
            train_pattern=os.path.join(artifact_utils.get_split_uri(examples, "train"), "*"),
            eval_pattern=os.path.join(artifact_utils.get_split_uri(examples, "validation"), "*"),
            transform_graph=artifact_utils.get_single_uri(input_dict["transform_graph"]),
            scenarios_csv=os.path.join(artifact_utils.get_single_uri(input_dict["scenario_table"]), SCENARIOS_FILE),
            output_dir=path_utils.serving_model_path(out.uri),
            record_dir=out.uri,
            train_steps=exec_properties["train_steps"],
            custom=json.loads(exec_properties.get("custom_config") or "{}"),
            knowledge_dir=knowledge_dir, knowledge_version=knowledge_version, base_model_dir=base_model_dir,
        )
        if record["plugged"]:
            out.set_int_custom_property("knowledge_version", int(knowledge_version))
        out.set_int_custom_property("warm_started", int(record["warm_start"]["restored"] > 0))
        logging.info("downstream model: %s", {k: record[k] for k in ("plugged", "knowledge_version", "train_rows")})
