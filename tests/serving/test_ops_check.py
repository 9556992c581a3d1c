"""serving.ops_check: flags ops stock TF Serving cannot run, passes clean SavedModels."""

import json
import os

from serving import ops_check
from tests.serving import make_base, saved_model


def test_py_function_is_flagged_and_clean_model_passes():
    assert ops_check.unsupported_ops(saved_model(0.0)) == set()
    assert ops_check.unsupported_ops(saved_model(0.0, py_function=True)) == {"EagerPyFunc"}


def test_unregistered_op_is_flagged(tmp_path):
    from tensorflow.core.protobuf import saved_model_pb2

    with open(os.path.join(saved_model(0.0), "saved_model.pb"), "rb") as f:
        model = saved_model_pb2.SavedModel.FromString(f.read())
    fn = model.meta_graphs[0].graph_def.library.function[0]
    fn.node_def.add(name="custom", op="MyCustomKernelOp")
    (tmp_path / "saved_model.pb").write_bytes(model.SerializeToString())
    assert ops_check.unsupported_ops(str(tmp_path)) == {"MyCustomKernelOp"}


def test_cli_checks_every_version_of_a_base_path(tmp_path, capsys):
    base = make_base(str(tmp_path), {1: 0.0})
    assert ops_check.main([base]) == 0
    assert json.loads(capsys.readouterr().out) == {os.path.join(base, "1"): []}
    assert ops_check.main([saved_model(0.0, py_function=True)]) == 1
    assert "EagerPyFunc" in capsys.readouterr().out
    assert ops_check.main([str(tmp_path / "nothing")]) == 2
