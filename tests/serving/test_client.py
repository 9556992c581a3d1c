"""serving.client: rows -> tf.Examples as CsvExampleGen makes them, Predict over gRPC/REST, retries."""

import json
import socket

import grpc
import numpy as np
import pytest
import tensorflow as tf

from serving import client
from serving.config import build_config
from serving.model_server import ModelServer
from tests.serving import in_process, make_base

CSV = """user_id,item_id,scenario_id,day,hist_item_ids,user_age_bucket,item_price,hour,coupon_amount,click,p_click
"u0","i325","banner",0,"i1 i2",3,"28.76",3,,1,"0.16671"
"u1","i556","feed",2,,0,"15.83",17,"5.5",0,"0.5"
"u2","i9",,1,,1,"3",0,,0,"0.25"
"""


def _kinds(example: tf.train.Example) -> dict:
    return {k: (f.WhichOneof("kind"), list(getattr(f, f.WhichOneof("kind")).value))
            for k, f in example.features.feature.items()}


def test_csv_rows_become_typed_examples(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text(CSV)
    rows = client.read_rows(str(path))
    assert len(rows) == 3
    kinds = _kinds(client.row_to_example(rows[1]))
    assert kinds["day"] == ("int64_list", [2])
    assert kinds["hour"] == ("int64_list", [17])
    assert kinds["item_price"][0] == "float_list"
    assert kinds["item_price"][1] == pytest.approx([15.83])
    assert kinds["coupon_amount"][1] == pytest.approx([5.5])
    assert kinds["scenario_id"] == ("bytes_list", [b"feed"])
    assert kinds["user_id"] == ("bytes_list", [b"u1"])
    assert "hist_item_ids" not in kinds  # empty cell: absent
    first = _kinds(client.row_to_example(rows[0]))
    assert first["hist_item_ids"] == ("bytes_list", [b"i1 i2"])
    assert "coupon_amount" not in first
    assert "scenario_id" not in _kinds(client.row_to_example(rows[2]))


def test_json_rows_keep_json_types_for_unlisted_columns(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"hour": "5", "item_price": 2, "extra_int": 7, "extra_float": 0.5,
                                 "extra_str": "x", "missing": None, "empty": ""}]))
    kinds = _kinds(client.row_to_example(client.read_rows(str(path))[0]))
    assert kinds == {"hour": ("int64_list", [5]), "item_price": ("float_list", [2.0]),
                     "extra_int": ("int64_list", [7]), "extra_float": ("float_list", [0.5]),
                     "extra_str": ("bytes_list", [b"x"])}
    with pytest.raises(ValueError, match="row 0: column 'hour'"):
        client.serialize_rows([{"hour": "noon"}])
    path.write_text('{"not": "a list"}')
    with pytest.raises(ValueError, match="list of objects"):
        client.read_rows(str(path))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = make_base(str(tmp_path_factory.mktemp("client")), {1: 0.0, 2: 0.7}, name="keep_general")
    config = build_config({"keep_general": base}, num_versions=2)
    srv = ModelServer(config, port=0, rest_api_port=0, file_system_poll_wait_seconds=0).start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("rest", [False, True])
def test_cli_prints_per_row_probabilities(server, tmp_path, capsys, rest):
    path = tmp_path / "rows.csv"
    path.write_text(CSV)
    port = server.rest_port if rest else server.port
    args = [str(path), "--model", "keep_general", "--port", str(port), "--batch_size", "2"]
    assert client.main(args + (["--rest"] if rest else [])) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["version"] == 2 and out["signature"] == "serving_default"
    want = in_process(0.7, client.serialize_rows(client.read_rows(str(path))))
    assert [p["row"] for p in out["predictions"]] == [0, 1, 2]
    for task in ("click", "conversion", "cart"):
        np.testing.assert_allclose([p[task] for p in out["predictions"]], want[task], atol=1e-5)

    assert client.main(args + ["--version", "1", "--signature", "knowledge"] + (["--rest"] if rest else [])) == 0
    out = json.loads(capsys.readouterr().out)
    want = in_process(0.0, client.serialize_rows(client.read_rows(str(path))), "knowledge")
    assert out["version"] == 1
    np.testing.assert_allclose([p["knowledge"] for p in out["predictions"]], want["knowledge"], atol=1e-5)

    assert client.main(args + ["--model", "nope"] + (["--rest"] if rest else [])) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


class _Unavailable(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.UNAVAILABLE

    def details(self):
        return "connection refused"


class _FlakyStub:
    def __init__(self, failures):
        self.failures = failures
        self.calls = 0

    def Predict(self, request, timeout):
        self.calls += 1
        if self.calls <= self.failures:
            raise _Unavailable()
        response = client.predict_pb2.PredictResponse()
        response.model_spec.version.value = 9
        response.outputs["click"].CopyFrom(tf.make_tensor_proto(np.array([0.5], np.float32)))
        return response


def test_retries_unavailable_with_backoff():
    c = client.ServingClient(retries=2, backoff_s=0.001)
    c._stub = _FlakyStub(failures=2)
    version, outputs = c.predict([b""], "m")
    assert (version, c._stub.calls) == (9, 3)
    c._stub = _FlakyStub(failures=3)
    with pytest.raises(client.PredictError, match="UNAVAILABLE"):
        c.predict([b""], "m")
    assert c._stub.calls == 3


@pytest.mark.parametrize("rest", [False, True])
def test_nothing_listening_is_unavailable(rest):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with client.ServingClient(port=port, rest=rest, retries=1, backoff_s=0.001, timeout=5) as c:
        with pytest.raises(client.PredictError) as info:
            c.predict([b""], "m")
    assert info.value.code == "UNAVAILABLE"


@pytest.mark.parametrize("values,shape", [([0.5, 0.25, 1.0, 0.0], [2, 2]), ([0.5], [3, 1]), ([], [0, 1])])
def test_output_array_reads_a_typed_float_field_as_tensorflow_does(values, shape):
    from tensorflow.core.framework import tensor_pb2

    proto = tensor_pb2.TensorProto(dtype=tf.float32.as_datatype_enum, float_val=values)
    for d in shape:
        proto.tensor_shape.dim.add().size = d
    # [0.5] for 3 values is TensorFlow's compressed form: one value repeated.
    got, want = client.output_array(proto), tf.make_ndarray(proto)
    assert got.dtype == want.dtype == np.float32 and got.shape == tuple(shape)
    np.testing.assert_array_equal(got, want)
