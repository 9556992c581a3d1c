import os

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from components.serving_pusher.models_config import pushed_models, write_models_config


def _version(root, model, version, complete=True):
    d = os.path.join(root, model, str(version))
    os.makedirs(os.path.join(d, "variables"), exist_ok=True)
    if complete:
        open(os.path.join(d, "saved_model.pb"), "wb").close()


def _parse(path):
    with open(path) as f:
        return text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())


def test_lists_every_model_with_a_complete_version(tmp_path):
    root = str(tmp_path / "serving")
    _version(root, "keep_general", 100)
    _version(root, "keep_general", 200, complete=False)  # still being copied
    _version(root, "keep_knowledge", 5)
    _version(root, "half_pushed", 7, complete=False)
    os.makedirs(os.path.join(root, "keep_general", "not_a_version"))
    assert pushed_models(root) == {"keep_general": [100], "keep_knowledge": [5]}

    path = write_models_config(root, versions_kept={"keep_knowledge": 5})
    config = _parse(path)
    entries = {c.name: c for c in config.model_config_list.config}
    assert set(entries) == {"keep_general", "keep_knowledge"}
    assert entries["keep_general"].base_path == os.path.join(root, "keep_general")
    assert entries["keep_general"].model_platform == "tensorflow"
    assert entries["keep_general"].model_version_policy.latest.num_versions == 1
    assert entries["keep_knowledge"].model_version_policy.latest.num_versions == 5
    docker = {c.name: c.base_path for c in _parse(os.path.join(root, "models.docker.config")).model_config_list.config}
    assert docker == {"keep_general": "/models/keep_general", "keep_knowledge": "/models/keep_knowledge"}
    assert not [f for f in os.listdir(root) if ".tmp-" in f]
