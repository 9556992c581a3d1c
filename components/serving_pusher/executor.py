"""Executor: TFX's filesystem Pusher, then models.config rewritten for the serving root.

An unblessed model (model_blessing input) is not pushed, and models.config is left as it is.

custom_config: {"versions_kept": {model_name: n}} (TF Serving's latest-n policy;
default 1 per model).
"""

import os

from absl import logging
from tfx.components.pusher import executor as pusher_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils
from tfx.utils import json_utils, proto_utils

from components.serving_pusher.models_config import write_models_config


class Executor(pusher_executor.Executor):
    def Do(self, input_dict, output_dict, exec_properties):
        result = super().Do(input_dict, output_dict, exec_properties)
        pushed = artifact_utils.get_single_instance(output_dict["pushed_model"])
        if not pushed.get_int_custom_property("pushed"):
            return result  # not blessed: the served models, and so their config, are unchanged
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties["push_destination"], destination)
        model_base = destination.filesystem.base_directory
        serving_root = os.path.dirname(os.path.normpath(model_base))
        custom = json_utils.loads(exec_properties.get("custom_config") or "null") or {}
        path = write_models_config(serving_root, custom.get("versions_kept"))
        logging.info("wrote %s", path)
        return result
