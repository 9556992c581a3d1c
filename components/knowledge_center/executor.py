"""Executor of KnowledgeCenter: picks the version, calls trainers.knowledge_center.run."""

import json
import os
import time

from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from trainers import knowledge_center


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict, output_dict, exec_properties):
        examples = input_dict["examples"]
        out = artifact_utils.get_single_instance(output_dict["knowledge"])
        version = int(time.time())  # TF Serving versions are integers; later runs get larger ones
        record = knowledge_center.run(
            train_pattern=os.path.join(artifact_utils.get_split_uri(examples, "train"), "*"),
            eval_pattern=os.path.join(artifact_utils.get_split_uri(examples, "validation"), "*"),
            transform_graph=artifact_utils.get_single_uri(input_dict["transform_graph"]),
            output_dir=path_utils.serving_model_path(out.uri),
            record_dir=out.uri,
            train_steps=exec_properties["train_steps"],
            version=version,
            custom=json.loads(exec_properties.get("custom_config") or "{}"),
        )
        out.set_int_custom_property("knowledge_version", version)
        out.set_string_custom_property("strategy", record["strategy"])
        out.set_int_custom_property("knowledge_width", record["width"])
