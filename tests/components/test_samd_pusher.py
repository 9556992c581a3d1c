"""SamdPusher's executor: each blessed student becomes a served version; the rest stay out."""

import json
import os

import pytest
import tensorflow as tf
from tfx.dsl.io import fileio
from tfx.types import standard_artifacts
from tfx.types.standard_component_specs import MODEL_BLESSING_KEY, MODEL_KEY, PUSHED_MODEL_KEY

from components.keys import SERVING_DIR_KEY
from components.samd_pusher.executor import Executor
from components.serving_pusher.models_config import CONFIG_FILE, pushed_models
from tests.components import artifact, ram_dir, to_ram


def save_tiny_model(path, scale=1.0):
    module = tf.Module()
    module.scale = tf.Variable(scale)
    module.f = tf.function(lambda x: x * module.scale, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(path), signatures=module.f)
    return str(path)


@pytest.fixture(params=["local", "ram"])
def place(request, tmp_path):
    """(local folder -> its URI on the tested filesystem, name -> an output URI there)."""
    if request.param == "local":
        return (lambda p: str(p)), (lambda name: str(tmp_path / name))
    return (lambda p: to_ram(str(p))), ram_dir


def _run(tmp_path, place, blessings):
    to_uri, out = place
    for sid in ("feed", "pay", "tiny"):
        save_tiny_model(tmp_path / "model" / "Format-Serving" / sid)
    (tmp_path / "blessing").mkdir()
    (tmp_path / "blessing" / "blessing.json").write_text(json.dumps(blessings))
    model = artifact(standard_artifacts.Model, to_uri(tmp_path / "model"))
    blessing = artifact(standard_artifacts.ModelBlessing, to_uri(tmp_path / "blessing"))
    pushed = artifact(standard_artifacts.PushedModel, out("pushed"))
    serving = out("serving")
    Executor().Do({MODEL_KEY: [model], MODEL_BLESSING_KEY: [blessing]}, {PUSHED_MODEL_KEY: [pushed]},
                  {SERVING_DIR_KEY: serving})
    return serving, pushed


def test_only_blessed_students_are_pushed_with_models_config(tmp_path, place):
    serving, pushed = _run(tmp_path, place, {"samd_feed": {"blessed": True}, "samd_pay": {"blessed": False,
                                                                                        "reason": "worse"}})
    versions = pushed_models(serving)
    assert set(versions) == {"samd_feed"}  # tiny: never evaluated, so not blessed either
    assert pushed.get_int_custom_property("pushed") == 1
    assert pushed.get_string_custom_property("pushed_version") == str(versions["samd_feed"][0])
    with fileio.open(os.path.join(pushed.uri, "pushed.json")) as f:
        assert list(json.loads(f.read())) == ["samd_feed"]
    with fileio.open(os.path.join(serving, CONFIG_FILE)) as f:
        assert 'name: "samd_feed"' in f.read()
    version = os.path.join(serving, "samd_feed", str(versions["samd_feed"][0]))
    loaded = tf.saved_model.load(version)
    assert float(loaded.signatures["serving_default"](tf.constant([2.0]))["output_0"][0]) == 2.0
    assert not [n for n in fileio.listdir(os.path.join(serving, "samd_feed")) if n.startswith(".tmp")]


def test_nothing_blessed_pushes_nothing_and_says_so(tmp_path, place):
    serving, pushed = _run(tmp_path, place, {})
    assert pushed.get_int_custom_property("pushed") == 0
    assert pushed_models(serving) == {}
    assert not fileio.exists(os.path.join(serving, CONFIG_FILE))
