import os

import pytest
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


def _push(tmp_path, to_uri, out, blessed):
    from tfx.proto import pusher_pb2
    from tfx.types import standard_artifacts
    from tfx.types.standard_component_specs import (CUSTOM_CONFIG_KEY, MODEL_BLESSING_KEY, MODEL_KEY, PUSHED_MODEL_KEY,
                                                    PUSH_DESTINATION_KEY)
    from tfx.utils import proto_utils

    from components.serving_pusher.executor import Executor
    from tests.components import artifact
    from tests.components.test_samd_pusher import save_tiny_model

    save_tiny_model(tmp_path / "model" / "Format-Serving")
    model = artifact(standard_artifacts.Model, to_uri(tmp_path / "model"))
    (tmp_path / "blessing").mkdir(exist_ok=True)
    blessing = artifact(standard_artifacts.ModelBlessing, to_uri(tmp_path / "blessing"), blessed=int(blessed))
    pushed = artifact(standard_artifacts.PushedModel, out("pushed"))
    serving = out("serving")
    destination = pusher_pb2.PushDestination(filesystem=pusher_pb2.PushDestination.Filesystem(
        base_directory=os.path.join(serving, "keep_general")))
    Executor().Do({MODEL_KEY: [model], MODEL_BLESSING_KEY: [blessing]}, {PUSHED_MODEL_KEY: [pushed]},
                  {PUSH_DESTINATION_KEY: proto_utils.proto_to_json(destination),
                   CUSTOM_CONFIG_KEY: '{"versions_kept": {"keep_general": 2}}'})
    return serving, pushed



@pytest.mark.parametrize("filesystem", ["local", "ram"])
def test_executor_pushes_a_blessed_model_and_writes_models_config(tmp_path, filesystem):
    from tfx.dsl.io import fileio

    from tests.components import ram_dir, to_ram

    to_uri, out = ((lambda p: str(p)), (lambda n: str(tmp_path / n))) if filesystem == "local" else (
        (lambda p: to_ram(str(p))), ram_dir)
    serving, pushed = _push(tmp_path, to_uri, out, blessed=True)
    versions = pushed_models(serving)["keep_general"]
    assert pushed.get_int_custom_property("pushed") == 1
    assert pushed.get_string_custom_property("pushed_version") == str(versions[0])
    assert pushed.get_string_custom_property("pushed_destination") == os.path.join(serving, "keep_general",
                                                                                    str(versions[0]))
    assert fileio.exists(os.path.join(pushed.uri, "saved_model.pb"))  # TFX's archive copy
    with fileio.open(os.path.join(serving, "models.config")) as f:
        config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    assert config.model_config_list.config[0].model_version_policy.latest.num_versions == 2


def test_executor_does_not_push_an_unblessed_model(tmp_path):
    serving, pushed = _push(tmp_path, str, lambda n: str(tmp_path / n), blessed=False)
    assert pushed.get_int_custom_property("pushed") == 0
    assert pushed_models(serving) == {} and not os.path.exists(os.path.join(serving, "models.config"))


def test_a_local_version_appears_whole_or_not_at_all(tmp_path, monkeypatch):
    """Every file is copied into a hidden sibling; the version folder appears by one rename."""
    from tfx.dsl.io import fileio

    from components.serving_pusher import push
    from tests.components.test_samd_pusher import save_tiny_model

    source = save_tiny_model(tmp_path / "model")
    base = str(tmp_path / "serving" / "m")
    seen = []
    copy = fileio.copy

    def watching(src, dst, overwrite=False):
        seen.append((os.path.exists(os.path.join(base, "7")), os.path.basename(dst)))
        return copy(src, dst, overwrite=overwrite)

    monkeypatch.setattr(fileio, "copy", watching)
    target = push.push_saved_model(source, base, 7)
    assert target == os.path.join(base, "7") and os.listdir(base) == ["7"]
    assert seen and not any(visible for visible, _ in seen)  # never visible while copying
    assert seen[-1][1] == "saved_model.pb"  # and the completeness mark last
    assert sorted(os.listdir(target)) == sorted(os.listdir(source))
