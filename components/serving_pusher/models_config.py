"""Writes TF Serving's `models.config` for every model pushed under a serving root.

Layout read: `<serving_root>/<model_name>/<integer version>/saved_model.pb`. A version
folder without `saved_model.pb` is still being copied (the Pusher copies that file
last) and does not count. Two files are written, atomically (temp file + rename):

* `models.config`: base paths as on this machine, for the embedded server;
* `models.docker.config`: base paths under `/models/<name>`, for the official
  `tensorflow/serving` image with the serving root mounted at `/models`.
"""

import os
import re
from typing import Dict, Mapping, Optional

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

DEFAULT_VERSIONS_KEPT = 1
# The knowledge cache keeps 5 versions served at once (KEEP's limit), whichever
# pusher rewrites the file: downstream models name the version they were trained with.
KNOWLEDGE_MODEL_NAME = "keep_knowledge"
KNOWLEDGE_VERSIONS_KEPT = 5
VERSIONS_KEPT = {KNOWLEDGE_MODEL_NAME: KNOWLEDGE_VERSIONS_KEPT}
CONFIG_FILE = "models.config"
DOCKER_CONFIG_FILE = "models.docker.config"
DOCKER_ROOT = "/models"


def pushed_models(serving_root: str) -> Dict[str, list]:
    """{model name: [complete versions, ascending]} under serving_root."""
    found = {}
    if not os.path.isdir(serving_root):
        return found
    for name in sorted(os.listdir(serving_root)):
        base = os.path.join(serving_root, name)
        if not os.path.isdir(base):
            continue
        versions = sorted(
            int(v) for v in os.listdir(base)
            if re.fullmatch(r"\d+", v) and os.path.isfile(os.path.join(base, v, "saved_model.pb"))
        )
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
        entry.base_path = os.path.join(base_root or os.path.abspath(serving_root), name)
        entry.model_platform = "tensorflow"
        entry.model_version_policy.latest.num_versions = int(versions_kept.get(name, DEFAULT_VERSIONS_KEPT))
    return config


def _write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_models_config(serving_root: str, versions_kept: Optional[Mapping[str, int]] = None) -> str:
    """Writes both config files under serving_root; returns the path of models.config."""
    os.makedirs(serving_root, exist_ok=True)
    local = build_config(serving_root, versions_kept)
    docker = build_config(serving_root, versions_kept, base_root=DOCKER_ROOT)
    path = os.path.join(serving_root, CONFIG_FILE)
    _write_atomically(path, text_format.MessageToString(local))
    _write_atomically(os.path.join(serving_root, DOCKER_CONFIG_FILE), text_format.MessageToString(docker))
    return path
