"""Executor of KnowledgePusher: copy the cache to <serving_dir>/keep_knowledge/<version>/, prune, rewrite models.config.

The PushedModel is marked as TFX's Pusher marks it; the version is the
knowledge artifact's own `knowledge_version`, not a push timestamp, because downstream
models name the cache version they were trained with.
"""

import os

from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.types.standard_component_specs import PUSHED_MODEL_KEY
from tfx.utils import path_utils

from components.keys import KNOWLEDGE_KEY, SERVING_DIR_KEY, VERSIONS_KEPT_KEY
from models import artifact_io
from components.serving_pusher.models_config import (KNOWLEDGE_MODEL_NAME, KNOWLEDGE_VERSIONS_KEPT, pushed_models,
                                                     write_models_config)
from components.serving_pusher.push import mark_pushed, push_saved_model

VERSIONS_KEPT = KNOWLEDGE_VERSIONS_KEPT


def push_knowledge(source: str, serving_dir: str, version: int, versions_kept: int = VERSIONS_KEPT) -> str:
    """Pushes one cache version; removes versions older than the newest `versions_kept`."""
    base = os.path.join(serving_dir, KNOWLEDGE_MODEL_NAME)
    target = push_saved_model(source, base, int(version))
    versions = pushed_models(serving_dir).get(KNOWLEDGE_MODEL_NAME, [])
    for old in versions[:-versions_kept]:
        # The config serves the newest `versions_kept` only: an older folder is unreachable.
        artifact_io.rmtree(os.path.join(base, str(old)))
        logging.info("removed %s version %d (older than the newest %d)", KNOWLEDGE_MODEL_NAME, old, versions_kept)
    write_models_config(serving_dir, {KNOWLEDGE_MODEL_NAME: versions_kept})
    return target


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict, output_dict, exec_properties):
        knowledge = artifact_utils.get_single_instance(input_dict[KNOWLEDGE_KEY])
        version = knowledge.get_int_custom_property("knowledge_version")
        if not version:
            raise ValueError(f"{knowledge.uri}: the knowledge artifact has no knowledge_version")
        target = push_knowledge(path_utils.serving_model_path(knowledge.uri), exec_properties[SERVING_DIR_KEY], version,
                                int(exec_properties.get(VERSIONS_KEPT_KEY) or VERSIONS_KEPT))
        logging.info("pushed %s", target)
        mark_pushed(artifact_utils.get_single_instance(output_dict[PUSHED_MODEL_KEY]), target, str(version))
