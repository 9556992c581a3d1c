"""Executor of SamdPusher: one version folder per blessed student, then models.config rewritten.

The PushedModel is marked as TFX's Pusher marks it; the blessing is per student (the
evaluator's blessing.json), so TFX's `CheckBlessing` does not apply.
"""

import os
import time

from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.types.standard_component_specs import MODEL_BLESSING_KEY, MODEL_KEY, PUSHED_MODEL_KEY
from tfx.utils import path_utils

from components.keys import SERVING_DIR_KEY
from models import artifact_io
from components.serving_pusher.models_config import write_models_config
from components.serving_pusher.push import SAVED_MODEL_PB, mark_not_pushed, mark_pushed, push_saved_model

MODEL_PREFIX = "samd_"


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict, output_dict, exec_properties):
        model_dir = path_utils.serving_model_path(artifact_utils.get_single_uri(input_dict[MODEL_KEY]))
        serving_dir = exec_properties[SERVING_DIR_KEY]
        scenarios = artifact_io.folders_with(model_dir, SAVED_MODEL_PB)
        if not scenarios:
            raise FileNotFoundError(f"{model_dir}: no student SavedModel to push")
        out = artifact_utils.get_single_instance(output_dict[PUSHED_MODEL_KEY])
        if input_dict.get(MODEL_BLESSING_KEY):
            blessing_uri = artifact_utils.get_single_uri(input_dict[MODEL_BLESSING_KEY])
            blessings = artifact_io.read_json(os.path.join(blessing_uri, "blessing.json"))
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
        artifact_io.write_json(os.path.join(out.uri, "pushed.json"), pushed)
        if not pushed:
            mark_not_pushed(out)
            return
        write_models_config(serving_dir)
        mark_pushed(out, serving_dir, str(version))
