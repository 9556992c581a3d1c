"""Executor: TFX's filesystem Pusher with an atomic version push, then models.config rewritten.

TFX's Pusher copies straight into `<base>/<version>/`, so a model server scanning the
base path can find a half-copied version; here the version goes through
`push.push_saved_model` (temporary sibling + rename on local filesystems). The blessing
check and the archive copy into the PushedModel artifact are TFX's, and the artifact is
marked as TFX's Pusher marks it.
An unblessed model is not pushed, and models.config is left as it is.

custom_config: {"versions_kept": {model_name: n}} (TF Serving's latest-n policy;
default 1 per model).
"""

import time

from absl import logging
from tfx.components.pusher import executor as pusher_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils
from tfx.types.standard_component_specs import CUSTOM_CONFIG_KEY, PUSHED_MODEL_KEY, PUSH_DESTINATION_KEY
from tfx.utils import io_utils, json_utils, proto_utils

from components.serving_pusher.models_config import write_models_config
from components.serving_pusher.push import mark_not_pushed, mark_pushed, push_saved_model


class Executor(pusher_executor.Executor):
    def Do(self, input_dict, output_dict, exec_properties):
        pushed = artifact_utils.get_single_instance(output_dict[PUSHED_MODEL_KEY])
        if not self.CheckBlessing(input_dict):
            mark_not_pushed(pushed)
            return  # not blessed: the served models, and so their config, are unchanged
        model_path = self.GetModelPath(input_dict)
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties[PUSH_DESTINATION_KEY], destination)
        if destination.WhichOneof("destination") != "filesystem":
            raise NotImplementedError(f"push destination {destination.WhichOneof('destination')!r}: filesystem only")
        model_base = destination.filesystem.base_directory
        version = str(int(time.time()))
        target = push_saved_model(model_path, model_base, int(version))
        logging.info("model written to serving path %s", target)
        io_utils.copy_dir(model_path, pushed.uri)  # the archive copy, as TFX's Pusher keeps it
        mark_pushed(pushed, target, version)
        serving_root = model_base.rstrip("/").rsplit("/", 1)[0]
        custom = json_utils.loads(exec_properties.get(CUSTOM_CONFIG_KEY) or "null") or {}
        logging.info("wrote %s", write_models_config(serving_root, custom.get("versions_kept")))
