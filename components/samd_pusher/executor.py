"""Executor of SamdPusher: one version folder per student, then models.config rewritten."""

import json
import os
import time

from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils, path_utils

from components.serving_pusher.models_config import write_models_config

MODEL_PREFIX = "samd_"


def push_saved_model(source: str, base_directory: str, version: int) -> str:
    """Copies a SavedModel to <base>/<version>/, saved_model.pb last (TF Serving's 'complete' mark)."""
    target = os.path.join(base_directory, str(version))
    if os.path.exists(target):
        raise FileExistsError(f"{target}: version already pushed")
    io_utils.copy_dir(source, target, deny_regex_patterns=[r"saved_model\.pb"])
    io_utils.copy_file(os.path.join(source, "saved_model.pb"), os.path.join(target, "saved_model.pb"))
    return target


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict, output_dict, exec_properties):
        model_dir = path_utils.serving_model_path(artifact_utils.get_single_uri(input_dict["model"]))
        serving_dir = exec_properties["serving_dir"]
        scenarios = sorted(d for d in os.listdir(model_dir) if os.path.isfile(os.path.join(model_dir, d, "saved_model.pb")))
        if not scenarios:
            raise FileNotFoundError(f"{model_dir}: no student SavedModel to push")
        out = artifact_utils.get_single_instance(output_dict["pushed_model"])
        if input_dict.get("model_blessing"):
            blessing_uri = artifact_utils.get_single_uri(input_dict["model_blessing"])
            with open(os.path.join(blessing_uri, "blessing.json")) as f:
                blessings = json.load(f)
            for sid in [s for s in scenarios if not blessings.get(f"{MODEL_PREFIX}{s}", {}).get("blessed")]:
                logging.info("not pushing %s%s: %s", MODEL_PREFIX, sid,
                             blessings.get(f"{MODEL_PREFIX}{sid}", {}).get("reason", "not evaluated"))
                scenarios.remove(sid)
        version = int(time.time())
        pushed = {}
        for sid in scenarios:
            pushed[f"{MODEL_PREFIX}{sid}"] = push_saved_model(
                os.path.join(model_dir, sid), os.path.join(serving_dir, f"{MODEL_PREFIX}{sid}"), version)
            logging.info("pushed %s", pushed[f"{MODEL_PREFIX}{sid}"])
        if pushed:
            write_models_config(serving_dir)
        os.makedirs(out.uri, exist_ok=True)
        with open(os.path.join(out.uri, "pushed.json"), "w") as f:
            json.dump(pushed, f, indent=1)
        out.set_int_custom_property("pushed", int(bool(pushed)))
        if pushed:
            out.set_string_custom_property("pushed_version", str(version))
