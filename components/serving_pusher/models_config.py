"""Writes TF Serving's `models.config` for every model pushed under a serving root.

Layout read: `<serving_root>/<model_name>/<integer version>/saved_model.pb`. A version
folder without `saved_model.pb` is still being copied (the Pusher copies that file
last) and does not count. Two files are written, atomically (models/artifact_io.py):

* `models.config`: base paths as on this machine, for the embedded server;
* `models.docker.config`: base paths under `/models/<name>`, for the official
  `tensorflow/serving` image with the serving root mounted at `/models`.
"""

import os
import re
from typing import Dict, Mapping, Optional

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2
from tfx.dsl.io import fileio

from models import artifact_io, registry

DEFAULT_VERSIONS_KEPT = 1
# The knowledge cache keeps 5 versions served at once (KEEP's limit), whichever
# pusher rewrites the file: downstream models name the version they were trained with.
KNOWLEDGE_MODEL_NAME = registry.KNOWLEDGE_MODEL
KNOWLEDGE_VERSIONS_KEPT = 5
VERSIONS_KEPT = {KNOWLEDGE_MODEL_NAME: KNOWLEDGE_VERSIONS_KEPT}
CONFIG_FILE = "models.config"
DOCKER_CONFIG_FILE = "models.docker.config"
DOCKER_ROOT = "/models"


def pushed_models(serving_root: str) -> Dict[str, list]:
    """{model name: [complete versions, ascending]} under serving_root."""
    found = {}
    for name in artifact_io.list_names(serving_root):
        base = os.path.join(serving_root, name)  # a file here lists no folders, so it is skipped
        versions = sorted(int(v) for v in artifact_io.folders_with(base, "saved_model.pb") if re.fullmatch(r"\d+", v))
        if versions:
            found[name] = versions
    return found


def build_config(serving_root: str, versions_kept: Optional[Mapping[str, int]] = None,
                 base_root: Optional[str] = None) -> model_server_config_pb2.ModelServerConfig:
    versions_kept = {**VERSIONS_KEPT, **(versions_kept or {})}
    config = model_server_config_pb2.ModelServerConfig()
    for name in pushed_models(serving_root):
        entry = config.model_config_list.config.add()
        entry.name = name
        root = base_root or (serving_root if "://" in serving_root
                             else os.path.abspath(serving_root))  # local-path: a URI is already absolute
        entry.base_path = os.path.join(root, name)
        entry.model_platform = "tensorflow"
        entry.model_version_policy.latest.num_versions = int(versions_kept.get(name, DEFAULT_VERSIONS_KEPT))
    return config


def write_models_config(serving_root: str, versions_kept: Optional[Mapping[str, int]] = None) -> str:
    """Writes both config files under serving_root; returns the path of models.config."""
    fileio.makedirs(serving_root)
    local = build_config(serving_root, versions_kept)
    docker = build_config(serving_root, versions_kept, base_root=DOCKER_ROOT)
    path = os.path.join(serving_root, CONFIG_FILE)
    artifact_io.write_text(path, text_format.MessageToString(local))
    artifact_io.write_text(os.path.join(serving_root, DOCKER_CONFIG_FILE), text_format.MessageToString(docker))
    return path
