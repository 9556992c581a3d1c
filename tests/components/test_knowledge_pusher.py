"""KnowledgePusher: a keep_knowledge version per push, the newest 5 kept on disk, in models.config and served."""

import os

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from components.knowledge_pusher.executor import push_knowledge
from components.serving_pusher.models_config import pushed_models, write_models_config
from models.keep_cache import KnowledgeCache


def _cache(path, version):
    rows = np.full((1, 2), float(version), np.float32)
    KnowledgeCache("decomposition", {"user": (["u1"], rows), "item": (["i1"], rows)}, version=str(version)).save(path)
    return path


def _policy(root):
    with open(os.path.join(root, "models.config")) as f:
        config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    return {c.name: c.model_version_policy.latest.num_versions for c in config.model_config_list.config}


def test_seven_pushes_keep_the_newest_five_and_another_pusher_keeps_the_policy(tmp_path):
    root = str(tmp_path / "serving")
    source = _cache(str(tmp_path / "cache"), 0)  # content does not matter to the pusher
    for version in range(101, 108):
        push_knowledge(source, root, version)
    assert pushed_models(root)["keep_knowledge"] == [103, 104, 105, 106, 107]
    assert _policy(root) == {"keep_knowledge": 5}
    os.makedirs(os.path.join(root, "keep_general", "1"))
    open(os.path.join(root, "keep_general", "1", "saved_model.pb"), "wb").close()
    write_models_config(root)  # what every other pusher does after its push
    assert _policy(root) == {"keep_general": 1, "keep_knowledge": 5}


def test_a_version_is_never_overwritten(tmp_path):
    root = str(tmp_path / "serving")
    source = _cache(str(tmp_path / "cache"), 0)
    push_knowledge(source, root, 5)
    try:
        push_knowledge(source, root, 5)
    except FileExistsError as e:
        assert "already pushed" in str(e)
    else:
        raise AssertionError("pushing an existing version must fail")


def test_the_server_serves_five_versions_and_each_answers_its_own_cache(tmp_path):
    from serving.client import ServingClient
    from serving.config import read_config_file
    from serving.model_server import ModelServer

    root = str(tmp_path / "serving")
    for version in range(1, 7):
        push_knowledge(_cache(str(tmp_path / f"cache{version}"), version), root, version)
    server = ModelServer(read_config_file(os.path.join(root, "models.config")), port=0, rest_api_port=None,
                         file_system_poll_wait_seconds=0).start()
    try:
        with ServingClient(port=server.port) as client:
            ids = {"user_id": np.array([b"u1"], dtype=object), "item_id": np.array([b"i1"], dtype=object),
                   "category_id": np.array([b"c"], dtype=object)}
            for version in range(2, 7):
                served, out = client.predict_inputs(ids, "keep_knowledge", version=version)
                assert served == version and out["version"].tolist() == [str(version).encode()]
                # decomposition: [K_u, K_i, K_u * K_i]
                np.testing.assert_allclose(out["knowledge"][0], [version] * 4 + [version * version] * 2)
            from serving.client import PredictError
            try:
                client.predict_inputs(ids, "keep_knowledge", version=1)
            except PredictError as e:
                assert e.code == "NOT_FOUND"
            else:
                raise AssertionError("version 1 is older than the newest 5 and must not be served")
    finally:
        server.stop()


def test_executor_pushes_the_artifacts_knowledge_version_on_a_non_local_filesystem(tmp_path):
    from tfx.dsl.io import fileio
    from tfx.types import standard_artifacts
    from tfx.types.standard_component_specs import PUSHED_MODEL_KEY

    from components.keys import KNOWLEDGE_KEY, SERVING_DIR_KEY
    from components.knowledge_pusher.executor import Executor
    from tests.components import artifact, ram_dir, to_ram

    _cache(str(tmp_path / "knowledge" / "Format-Serving"), 0)
    knowledge = artifact(standard_artifacts.Model, to_ram(str(tmp_path / "knowledge")), knowledge_version=1700000042)
    pushed = artifact(standard_artifacts.PushedModel, ram_dir("pushed"))
    serving = ram_dir("serving")
    Executor().Do({KNOWLEDGE_KEY: [knowledge]}, {PUSHED_MODEL_KEY: [pushed]}, {SERVING_DIR_KEY: serving})
    assert pushed_models(serving) == {"keep_knowledge": [1700000042]}
    assert pushed.get_int_custom_property("pushed") == 1
    assert pushed.get_string_custom_property("pushed_version") == "1700000042"
    with fileio.open(os.path.join(serving, "models.config")) as f:
        assert "num_versions: 5" in f.read()
