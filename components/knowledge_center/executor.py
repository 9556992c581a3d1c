"""Executor of KnowledgeCenter: picks the version, calls trainers.knowledge_center.run."""

import json
import os
import time

from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.types.standard_component_specs import CUSTOM_CONFIG_KEY, EXAMPLES_KEY, TRANSFORM_GRAPH_KEY
from tfx.utils import path_utils

from components.keys import KNOWLEDGE_KEY, TRAIN_STEPS_KEY
from trainers import knowledge_center


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict, output_dict, exec_properties):
        examples = input_dict[EXAMPLES_KEY]
        out = artifact_utils.get_single_instance(output_dict[KNOWLEDGE_KEY])
        version = int(time.time())  # TF Serving versions are integers; later runs get larger ones
        record = knowledge_center.run(
            train_pattern=os.path.join(artifact_utils.get_split_uri(examples, "train"), "*"),
            eval_pattern=os.path.join(artifact_utils.get_split_uri(examples, "validation"), "*"),
            transform_graph=artifact_utils.get_single_uri(input_dict[TRANSFORM_GRAPH_KEY]),
            output_dir=path_utils.serving_model_path(out.uri),
            record_dir=out.uri,
            train_steps=exec_properties[TRAIN_STEPS_KEY],
            version=version,
            custom=json.loads(exec_properties.get(CUSTOM_CONFIG_KEY) or "{}"),
        )
        out.set_int_custom_property("knowledge_version", version)
        out.set_string_custom_property("strategy", record["strategy"])
        out.set_int_custom_property("knowledge_width", record["width"])
