"""The embedded model server against TF Serving's protocol, on tiny SavedModels.

Every server here runs in-process on ports picked by the OS; two tests also start the
CLI as a subprocess. Clients are the official tensorflow_serving stubs and plain HTTP.
"""

import base64
import contextlib
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_management_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc)
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.config import build_config, read_config_file
from serving.model_server import ModelServer
from tests.serving import (K, VOCAB, call_saved_model, copy_version, examples, in_process, make_base, saved_model,
                           vocab_model, write_warmup)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_BYTES = 64 * 1024
EXAMPLE_CAP = 500


# ---- helpers ------------------------------------------------------------------------------

def request(serialized, model="m", signature="", version=None, label=None, output_filter=(), tensor=None):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = version
    if label is not None:
        req.model_spec.version_label = label
    req.output_filter.extend(output_filter)
    req.inputs["examples"].CopyFrom(tensor if tensor is not None else
                                    tf.make_tensor_proto(serialized, dtype=tf.string, shape=[len(serialized)]))
    return req


class Clients:
    def __init__(self, server: ModelServer):
        self.server = server
        self.channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        self.predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model_stub = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def predict(self, req, timeout=10):
        return self.predict_stub.Predict(req, timeout=timeout)

    def outputs(self, response):
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    def http(self, path, body=None, raw=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(f"http://127.0.0.1:{self.server.rest_port}{path}", data=data)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def close(self):
        self.channel.close()


def b64(serialized):
    return [{"b64": base64.b64encode(s).decode()} for s in serialized]


def assert_close(actual, expected):
    assert sorted(actual) == sorted(expected)
    for k in expected:
        np.testing.assert_allclose(np.asarray(actual[k], dtype=np.float32), expected[k], atol=1e-5, err_msg=k)


def start(config=None, **kwargs) -> ModelServer:
    kwargs.setdefault("port", 0)
    kwargs.setdefault("rest_api_port", 0)
    kwargs.setdefault("file_system_poll_wait_seconds", 0)
    kwargs.setdefault("version_settle_seconds", 0)  # tests that copy slowly set their own
    return ModelServer(config, **kwargs).start()


def policy_config(base, name="m", **policy):
    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add(name=name, base_path=base, model_platform="tensorflow")
    if "latest" in policy:
        entry.model_version_policy.latest.num_versions = policy["latest"]
    elif "specific" in policy:
        entry.model_version_policy.specific.versions.extend(policy["specific"])
    elif policy.get("all"):
        entry.model_version_policy.all.SetInParent()
    for label, version in policy.get("labels", {}).items():
        entry.version_labels[label] = version
    return config


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Model "m" (versions 1 and 2, both served, label stable=1) and "empty" (no versions)."""
    root = tmp_path_factory.mktemp("served")
    base = make_base(str(root), {1: 0.0, 2: 0.7})
    config = policy_config(base, all=True, labels={"stable": 1})
    empty = config.model_config_list.config.add(name="empty", base_path=str(root / "empty"),
                                                model_platform="tensorflow")
    assert empty
    server = start(config, max_request_bytes=MAX_BYTES, max_examples_per_request=EXAMPLE_CAP)
    clients = Clients(server)
    yield clients
    clients.close()
    server.stop()


# ---- predict, metadata, status ------------------------------------------------------------

def test_grpc_and_rest_predict_equal_in_process_call(served):
    xs = examples(7)
    for signature, version, bias in (("serving_default", None, 0.7), ("knowledge", 1, 0.0)):
        want = in_process(bias, xs, signature)
        resp = served.predict(request(xs, signature=signature, version=version))
        assert resp.model_spec.name == "m"
        assert resp.model_spec.version.value == (version or 2)
        assert resp.model_spec.signature_name == signature
        assert_close(served.outputs(resp), want)
        # predict_util.cc fills the typed fields: a client reading float_val gets the values.
        for name, proto in resp.outputs.items():
            assert not proto.tensor_content, name
            np.testing.assert_allclose(proto.float_val, want[name].ravel(), rtol=1e-6)

        path = "/v1/models/m" + (f"/versions/{version}" if version else "") + ":predict"
        status, body = served.http(path, {"signature_name": signature, "instances": b64(xs)})
        assert status == 200, body
        if signature == "knowledge":  # one output: TF Serving drops its name
            assert np.asarray(body["predictions"]).shape == (7, K)
            assert_close({"knowledge": body["predictions"]}, want)
        else:
            rows = body["predictions"]
            assert_close({k: [r[k] for r in rows] for k in rows[0]}, want)

        status, body = served.http(path, {"signature_name": signature, "inputs": {"examples": b64(xs)}})
        assert status == 200, body
        outputs = body["outputs"] if signature != "knowledge" else {"knowledge": body["outputs"]}
        assert_close(outputs, want)


def test_output_filter_and_label(served):
    xs = examples(3, seed=1)
    resp = served.predict(request(xs, label="stable", output_filter=["click"]))
    assert resp.model_spec.version.value == 1
    assert list(resp.outputs) == ["click"]
    np.testing.assert_allclose(served.outputs(resp)["click"], in_process(0.0, xs)["click"], atol=1e-5)
    status, body = served.http("/v1/models/m/labels/stable:predict", {"instances": b64(xs)})
    assert status == 200
    np.testing.assert_allclose([r["cart"] for r in body["predictions"]], in_process(0.0, xs)["cart"], atol=1e-5)


def test_metadata_reports_signatures(served):
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "m"
    resp = served.predict_stub.GetModelMetadata(req, timeout=10)
    assert resp.model_spec.version.value == 2
    sdm = get_model_metadata_pb2.SignatureDefMap()
    assert resp.metadata["signature_def"].Unpack(sdm)
    # get_model_metadata_impl.cc: the MetaGraph's SignatureDefs as stored, graph tensor names included.
    with open(os.path.join(served.server.registry.model("m").servables[2].path, "saved_model.pb"), "rb") as f:
        (graph,) = saved_model_pb2.SavedModel.FromString(f.read()).meta_graphs
    assert dict(sdm.signature_def) == dict(graph.signature_def)
    assert set(sdm.signature_def) == {"serving_default", "knowledge", "__saved_model_init_op"}
    sdef = sdm.signature_def["serving_default"]
    assert sdef.method_name == "tensorflow/serving/predict"
    assert list(sdef.inputs) == ["examples"] and sdef.inputs["examples"].dtype == tf.string.as_datatype_enum
    assert sdef.inputs["examples"].name == "serving_default_examples:0"
    assert set(sdef.outputs) == {"click", "conversion", "cart"}
    assert sdef.outputs["click"].dtype == tf.float32.as_datatype_enum
    dims = [d.size for d in sdm.signature_def["knowledge"].outputs["knowledge"].tensor_shape.dim]
    assert dims == [-1, K]

    status, body = served.http("/v1/models/m/versions/1/metadata")
    assert status == 200
    assert body["model_spec"]["version"] == "1"
    sigs = body["metadata"]["signature_def"]["signature_def"]
    assert sigs["serving_default"]["inputs"]["examples"]["dtype"] == "DT_STRING"


def test_status_reports_available_versions(served):
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "m"
    resp = served.model_stub.GetModelStatus(req, timeout=10)
    states = {s.version: (get_model_status_pb2.ModelVersionStatus.State.Name(s.state), s.status.error_code)
              for s in resp.model_version_status}
    assert states == {1: ("AVAILABLE", 0), 2: ("AVAILABLE", 0)}

    status, body = served.http("/v1/models/m/versions/2")
    assert status == 200
    assert body == {"model_version_status": [
        {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    # get_model_status_impl.cc's texts.
    assert served.http("/v1/models/nope") == (404, {"error": "Could not find any versions of model nope"})
    assert served.http("/v1/models/m/versions/7") == (404, {"error": "Could not find version 7 of model m"})


# ---- bad input ----------------------------------------------------------------------------

def _grpc_cases():
    xs = examples(2)
    garbage = tf.make_tensor_proto([b"not a tf.Example"], dtype=tf.string, shape=[1])
    floats = tf.make_tensor_proto(np.zeros(2, np.float32))
    matrix = tf.make_tensor_proto(np.array([xs], dtype=object), dtype=tf.string)
    big = examples(1) * 3000
    missing = predict_pb2.PredictRequest()
    missing.model_spec.name = "m"
    missing.inputs["wrong"].CopyFrom(tf.make_tensor_proto(xs, dtype=tf.string, shape=[2]))
    return [
        # core/basic_manager.cc, the request as core/manager.h's ServableRequest::DebugString.
        ("unknown model", request(xs, model="nope"), grpc.StatusCode.NOT_FOUND,
         "Servable not found for request: Latest(nope)"),
        ("unknown version", request(xs, version=99), grpc.StatusCode.NOT_FOUND,
         "Servable not found for request: Specific(m, 99)"),
        # server_core.cc GetModelVersionForLabel.
        ("unknown label", request(xs, label="canary"), grpc.StatusCode.INVALID_ARGUMENT,
         "Unrecognized servable version label: canary"),
        # servables/tensorflow/predict_util.cc.
        ("wrong signature", request(xs, signature="nosig"), grpc.StatusCode.FAILED_PRECONDITION,
         'Serving signature key "nosig" not found.'),
        ("missing input", missing, grpc.StatusCode.INVALID_ARGUMENT, "examples"),
        ("wrong dtype", request(xs, tensor=floats), grpc.StatusCode.INVALID_ARGUMENT, "examples"),
        ("wrong shape", request(xs, tensor=matrix), grpc.StatusCode.INVALID_ARGUMENT, "examples"),
        # The TF error itself, not just "Graph execution error:".
        ("undecodable example", request(xs, tensor=garbage), grpc.StatusCode.INVALID_ARGUMENT,
         "Could not parse example input"),
        ("unknown output", request(xs, output_filter=["ctr"]), grpc.StatusCode.INVALID_ARGUMENT,
         "output tensor alias not found in signature: ctr"),
        # predict_util.cc PreProcessPrediction.
        ("duplicated output_filter", request(xs, output_filter=["click", "click"]),
         grpc.StatusCode.INVALID_ARGUMENT, "duplicate output tensor alias: click"),
        ("over size cap", request(big), grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
        ("over example cap", request(examples(1) * (EXAMPLE_CAP + 1)), grpc.StatusCode.RESOURCE_EXHAUSTED,
         "per-request limit"),
        ("no loadable version", request(xs, model="empty"), grpc.StatusCode.NOT_FOUND,
         "Servable not found for request: Latest(empty)"),
        ("path in name", request(xs, model="../m"), grpc.StatusCode.INVALID_ARGUMENT, "../m"),
        ("separator in name", request(xs, model="a/b"), grpc.StatusCode.INVALID_ARGUMENT, "a/b"),
    ]


def test_bad_grpc_requests_get_tf_serving_codes(served):
    good = request(examples(2))
    for what, req, code, needle in _grpc_cases():
        with pytest.raises(grpc.RpcError) as info:
            served.predict(req)
        assert info.value.code() == code, f"{what}: {info.value.code()} {info.value.details()}"
        assert needle in info.value.details(), f"{what}: {info.value.details()}"
        assert served.predict(good).model_spec.version.value == 2, f"server broken after {what}"


def raw_http(port, data: bytes, timeout=10):
    """(status, headers, body) for raw request bytes; body {} when the server sent none."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed without a response: {buf!r}")
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", 0))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return int(lines[0].split()[1]), headers, (json.loads(body) if body else {})


def test_bad_rest_requests_get_tf_serving_codes(served):
    xs = b64(examples(2))
    garbage = [{"b64": base64.b64encode(b"not a tf.Example").decode()}]
    cases = [
        ("unknown model", "/v1/models/nope:predict", {"instances": xs}, 404,
         "Servable not found for request: Latest(nope)"),
        ("unknown version", "/v1/models/m/versions/99:predict", {"instances": xs}, 404,
         "Servable not found for request: Specific(m, 99)"),
        # server_core.cc: INVALID_ARGUMENT, which http_server.cc ToHTTPStatusCode makes 400.
        ("unknown label", "/v1/models/m/labels/canary:predict", {"instances": xs}, 400,
         "Unrecognized servable version label: canary"),
        # http_rest_api_handler.cc GetInfoMap.
        ("wrong signature", "/v1/models/m:predict", {"signature_name": "nosig", "instances": xs}, 400,
         'Serving signature name: "nosig" not found in signature def'),
        ("missing input", "/v1/models/m:predict", {"instances": [{"wrong": x} for x in xs]}, 400, "examples"),
        ("wrong dtype", "/v1/models/m:predict", {"instances": [1.5, 2.5]}, 400, "examples"),
        ("wrong shape", "/v1/models/m:predict", {"instances": [xs]}, 400, "examples"),
        ("ragged", "/v1/models/m:predict", {"inputs": [xs, [xs[0]]]}, 400, "examples"),
        ("bad base64", "/v1/models/m:predict", {"instances": [{"b64": "%%%"}]}, 400, "examples"),
        ("undecodable example", "/v1/models/m:predict", {"instances": garbage}, 400,
         "Could not parse example input"),
        ("no instances", "/v1/models/m:predict", {"signature_name": "serving_default"}, 400, "instances"),
        # util/json_tensor.cc.
        ("empty instances", "/v1/models/m:predict", {"instances": []}, 400, "No values in 'instances' array"),
        ("over example cap", "/v1/models/m:predict", {"instances": xs[:1] * (EXAMPLE_CAP + 1)}, 429,
         "per-request limit"),
        ("no loadable version", "/v1/models/empty:predict", {"instances": xs}, 404,
         "Servable not found for request: Latest(empty)"),
        ("path in name", "/v1/models/..:predict", {"instances": xs}, 400, ".."),
        ("encoded separator", "/v1/models/a%2Fb:predict", {"instances": xs}, 400, "a/b"),
        # http_rest_api_handler.cc ProcessRequest: what ParseModelInfo does not match is
        # "Malformed request", INVALID_ARGUMENT: 400.
        ("bad version", "/v1/models/m/versions/x:predict", {"instances": xs}, 400,
         "Malformed request: POST /v1/models/m/versions/x:predict"),
        ("non-ASCII version", "/v1/models/m/versions/%D9%A1:predict", {"instances": xs}, 400, "Malformed request"),
        ("version past int64", "/v1/models/m/versions/99999999999999999999:predict", {"instances": xs}, 400,
         "Failed to convert version"),
        ("unknown verb", "/v1/models/m:explain", {"instances": xs}, 400, "Malformed request: POST /v1/models/m:explain"),
        ("malformed path", "/v1/models", {"instances": xs}, 400, "Malformed request: POST /v1/models"),
        ("classify without examples", "/v1/models/m:classify", {"instances": xs}, 400,
         "When method is classify, key 'examples' is expected and was not found"),
        # Outside /v1/ TF Serving's dispatcher has no handler (http_server.cc kPathRegex).
        ("unknown path", "/v2/whatever", {"instances": xs}, 404, "/v2/whatever"),
    ]
    for what, path, body, status, needle in cases:
        got, payload = served.http(path, body)
        assert got == status, f"{what}: {got} {payload}"
        assert needle in payload["error"], f"{what}: {payload}"
        assert served.http("/v1/models/m:predict", {"instances": xs})[0] == 200, f"broken after {what}"
    got, payload = served.http("/v1/models/m:predict", raw=b"{not json")
    assert got == 400 and "JSON" in payload["error"]
    got, payload = served.http("/v1/models/m:predict", raw=b"[" * 20_000 + b"]" * 20_000)
    assert got == 400 and "JSON" in payload["error"], payload
    got, payload = served.http("/v1/models/m:predict", raw=b"x" * (MAX_BYTES + 1))
    assert got == 429 and "limit" in payload["error"]
    assert served.http("/v1/models/m:predict", {"instances": xs})[0] == 200


def test_rest_methods_and_framing_like_tf_serving(served):
    port = served.server.rest_port
    body = json.dumps({"instances": b64(examples(3))}).encode()
    for method in ("PUT", "DELETE", "PATCH"):
        status, headers, payload = raw_http(port, f"{method} /v1/models/m HTTP/1.1\r\nHost: x\r\n"
                                                  "Content-Length: 0\r\n\r\n".encode())
        assert (status, headers["content-type"]) == (400, "application/json"), method
        assert payload == {"error": f"Malformed request: {method} /v1/models/m"}
    status, headers, payload = raw_http(port, b"OPTIONS /v1/models/m:predict HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 400 and headers["access-control-allow-origin"] == "*"
    # Chunked bodies are HTTP/1.1; TF Serving's libevent takes them.
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 100]), body[i:i + 100]) for i in range(0, len(body), 100))
    status, headers, payload = raw_http(port, b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\n"
                                              b"Transfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n")
    assert status == 200 and len(payload["predictions"]) == 3
    status, _, payload = raw_http(port, "POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\n"
                                        "Content-Length: \u0661\u0662\r\n\r\n".encode("utf-8"))
    assert status == 400 and "Malformed request" in payload["error"]
    status, _, payload = raw_http(port, "GET /v1/models/m/versions/\u0661 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert status == 400


def test_rest_answers_expect_100_continue(served):
    # curl sends this for bodies over 1 KiB and waits (1 s) for the interim answer.
    body = json.dumps({"instances": b64(examples(2))}).encode()
    with socket.create_connection(("127.0.0.1", served.server.rest_port), timeout=10) as sock:
        sock.sendall(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body))
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            chunk = sock.recv(1)
            assert chunk, "closed before 100 Continue"
            interim += chunk
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        answer = b""
        while b"}" not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 OK")


def test_error_codes_map_to_tf_serving_http_statuses():
    from serving.errors import ServingError
    # http_server.cc ToHTTPStatusCode: CLIENT_CLOSED_REQUEST and GATEWAY_TO.
    assert ServingError(grpc.StatusCode.CANCELLED, "").http_status == 499
    assert ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "").http_status == 504
    assert ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, "").http_status == 429
    assert ServingError(grpc.StatusCode.FAILED_PRECONDITION, "").http_status == 400


# ---- versions -----------------------------------------------------------------------------

def test_new_version_swaps_in_without_failed_requests(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="serving")
    base = make_base(str(tmp_path), {1: 0.0})
    server = start(model_name="m", model_base_path=base, file_system_poll_wait_seconds=0.05)
    clients = Clients(server)
    xs = examples(4, seed=3)
    seen, failures, stop = [], [], threading.Event()

    def loop():
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                resp = clients.predict(request(xs))
                seen.append((resp.model_spec.version.value, clients.outputs(resp)["click"]))
            except grpc.RpcError as e:
                failures.append(f"{e.code()}: {e.details()}")
            if sum(1 for v, _ in seen if v == 2) >= 20:
                return

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        while len(seen) < 10 and thread.is_alive():
            time.sleep(0.01)
        staging = copy_version(saved_model(0.7), str(tmp_path / "staging"))
        os.rename(staging, os.path.join(base, "2"))  # the Pusher's atomic move
        thread.join(timeout=30)
    finally:
        stop.set()
        thread.join(timeout=60)
    try:
        assert failures == []
        versions = [v for v, _ in seen]
        assert versions[0] == 1 and versions[-1] == 2
        assert versions == sorted(versions), "a request went back to the old version after the swap"
        np.testing.assert_allclose(seen[-1][1], in_process(0.7, xs)["click"], atol=1e-5)
        logs = caplog.text
        assert "loaded model m version 2" in logs and "unloaded model m version 1" in logs
    finally:
        clients.close()
        server.stop()


def test_half_written_versions_are_never_served(tmp_path):
    base = make_base(str(tmp_path), {1: 0.0})
    server = start(model_name="m", model_base_path=base)
    clients = Clients(server)
    try:
        shutil.copytree(os.path.join(saved_model(0.7), "variables"), os.path.join(base, "5", "variables"))
        copy_version(saved_model(0.7), os.path.join(base, "6.tmp"))
        os.makedirs(os.path.join(base, "7"))
        with open(os.path.join(base, "7", "saved_model.pb"), "wb") as f:
            f.write(b"half a protobuf")
        server.poll_now()
        xs = examples(2)
        assert clients.predict(request(xs)).model_spec.version.value == 1
        for version in (5, 7):
            with pytest.raises(grpc.RpcError) as info:
                clients.predict(request(xs, version=version))
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
        status, body = clients.http("/v1/models/m")
        states = {s["version"]: s["state"] for s in body["model_version_status"]}
        assert states == {"7": "END", "1": "AVAILABLE"}
        assert server.stats["load_failures"] == 1

        # The copy completes (new files): retried at the next poll, without waiting out the backoff.
        shutil.rmtree(os.path.join(base, "7"))
        copy_version(saved_model(0.7), os.path.join(base, "7"))
        server.poll_now()
        resp = clients.predict(request(xs))
        assert resp.model_spec.version.value == 7
        assert_close(clients.outputs(resp), in_process(0.7, xs))
    finally:
        clients.close()
        server.stop()


class _Clock:
    """The server's wall clock, shifted: `settled()` jumps past the settle interval."""

    def __init__(self):
        self.offset = 0.0

    def __call__(self):
        return time.time() + self.offset

    def settled(self):
        self.offset = 3600.0

    def now(self):
        self.offset = 0.0


def test_slow_in_place_copy_is_never_served_half_written(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="serving")
    v1, v2 = vocab_model(0.0), vocab_model(100.0)
    base = tmp_path / "m"
    copy_version(v1, str(base / "1"))
    clock = _Clock()
    clock.settled()
    server = start(model_name="m", model_base_path=str(base), version_settle_seconds=60, clock=clock)
    clients = Clients(server)
    xs = examples(12)
    want_v1 = call_saved_model(v1, xs)
    lines = (VOCAB_TEXT := "\n".join(VOCAB) + "\n").splitlines(keepends=True)
    dst = base / "2"

    def check_still_v1(step):
        server.poll_now()
        resp = clients.predict(request(xs))
        assert resp.model_spec.version.value == 1, step
        np.testing.assert_array_equal(clients.outputs(resp)["index"], want_v1["index"], err_msg=step)

    try:
        # rsync's order, in place: saved_model.pb is not last, and the asset is cut short
        # (it stalls there) before the rest arrives.
        clock.now()
        steps = [("assets/vocab.txt", "".join(lines[:len(lines) // 2]).encode()),
                 ("fingerprint.pb", None), ("saved_model.pb", None),
                 ("variables/variables.index", None), ("variables/variables.data-00000-of-00001", None),
                 ("assets/vocab.txt", VOCAB_TEXT.encode())]
        for rel, data in steps:
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            (dst / rel).write_bytes(data if data is not None else (open(os.path.join(v2, rel), "rb").read()))
            check_still_v1(f"after writing {rel}")
        assert server.stats.get("load_failures", 0) == 0, "an unsettled folder must not count as failed"

        clock.settled()  # the copier has been quiet for the settle interval
        server.poll_now()
        resp = clients.predict(request(xs))
        assert resp.model_spec.version.value == 2
        np.testing.assert_array_equal(clients.outputs(resp)["index"], call_saved_model(v2, xs)["index"])

        # The loaded version's asset is rewritten in place: served as loaded until the
        # new files settle, then reloaded.
        clock.now()
        (dst / "assets" / "vocab.txt").write_text("feed\nbanner\n")
        server.poll_now()
        np.testing.assert_array_equal(clients.outputs(clients.predict(request(xs)))["index"],
                                      call_saved_model(v2, xs)["index"])
        clock.settled()
        server.poll_now()
        resp = clients.predict(request(xs))
        assert resp.model_spec.version.value == 2
        np.testing.assert_array_equal(clients.outputs(resp)["index"], call_saved_model(str(dst), xs)["index"])
        assert "model m version 2 changed on disk: reloaded" in caplog.text
    finally:
        clients.close()
        server.stop()


def test_settled_but_incomplete_version_is_a_reported_failure(tmp_path):
    base = make_base(str(tmp_path), {1: 0.0})
    dst = os.path.join(base, "2")
    copy_version(vocab_model(0.0), dst)
    os.remove(os.path.join(dst, "assets", "vocab.txt"))
    server = start(model_name="m", model_base_path=base)
    clients = Clients(server)
    try:
        status, body = clients.http("/v1/models/m/versions/2")
        assert status == 200
        (state,) = body["model_version_status"]
        assert state["state"] == "END" and "assets/vocab.txt" in state["status"]["error_message"]
        assert clients.predict(request(examples(2))).model_spec.version.value == 1
    finally:
        clients.close()
        server.stop()


def test_version_policies_and_unload(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="serving")
    base = make_base(str(tmp_path), {1: 0.0, 2: 0.7})
    server = start(policy_config(base, latest=2))
    try:
        assert sorted(server.registry.model("m").servables) == [1, 2]
        copy_version(saved_model(0.0), os.path.join(base, "3"))
        server.poll_now()
        assert sorted(server.registry.model("m").servables) == [2, 3]
        assert "unloaded model m version 1" in caplog.text
        server.reload_config(policy_config(base, specific=[1]))
        assert sorted(server.registry.model("m").servables) == [1]
        server.reload_config(policy_config(base, all=True))
        assert sorted(server.registry.model("m").servables) == [1, 2, 3]
    finally:
        server.stop()


def test_version_folders_keep_their_own_names(tmp_path, caplog):
    # TF Serving's file_system_storage_path_source.cc: 00000123/ is version 123, loaded from that folder.
    caplog.set_level(logging.INFO, logger="serving")
    base = os.path.join(str(tmp_path), "m")
    copy_version(saved_model(0.0), os.path.join(base, "00000123"))
    server = start(build_config({"m": base}))
    clients = Clients(server)
    try:
        (servable,) = server.registry.model("m").servables.values()
        assert servable.version == 123 and servable.path == os.path.join(base, "00000123")
        xs = examples(3)
        response = clients.predict(request(xs, model="m", version=123))
        assert response.model_spec.version.value == 123
        # Two folders naming one version: the plain name wins, as TF Serving's fast path picks it.
        copy_version(saved_model(0.7), os.path.join(base, "123"))
        server.poll_now()
        assert server.registry.model("m").servables[123].path == os.path.join(base, "123")
        assert caplog.text.count("Duplicate version directories detected. Version 123") == 1
        server.poll_now()  # warned once per layout, not at every poll
        assert caplog.text.count("Duplicate version directories detected") == 1
    finally:
        clients.close()
        server.stop()


def test_reload_config_request_adds_and_removes_models(tmp_path):
    base_a = make_base(str(tmp_path), {1: 0.0}, name="a")
    base_b = make_base(str(tmp_path), {3: 0.7}, name="b")
    server = start(build_config({"a": base_a}))
    clients = Clients(server)
    try:
        reload = model_management_pb2.ReloadConfigRequest()
        reload.config.CopyFrom(build_config({"a": base_a, "b": base_b}))
        clients.model_stub.HandleReloadConfigRequest(reload, timeout=30)
        xs = examples(2)
        assert clients.predict(request(xs, model="b")).model_spec.version.value == 3
        reload.config.CopyFrom(build_config({"b": base_b}))
        clients.model_stub.HandleReloadConfigRequest(reload, timeout=30)
        with pytest.raises(grpc.RpcError) as info:
            clients.predict(request(xs, model="a"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        bad = model_management_pb2.ReloadConfigRequest()
        bad.config.model_config_list.config.add(name="../x", base_path=base_a)
        with pytest.raises(grpc.RpcError) as info:
            clients.model_stub.HandleReloadConfigRequest(bad, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert clients.predict(request(xs, model="b")).model_spec.version.value == 3
    finally:
        clients.close()
        server.stop()


# ---- warmup and batching ------------------------------------------------------------------

def test_warmup_requests_are_replayed_at_load(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="serving")
    base = make_base(str(tmp_path), {1: 0.0})
    write_warmup(os.path.join(base, "1"), [request(examples(2)), request(examples(3), signature="knowledge"),
                                           request(examples(1))])
    broken = make_base(str(tmp_path), {}, name="broken")
    server = start(build_config({"m": base, "broken": broken}))
    try:
        assert server.stats["warmup_requests"] == 3
        assert "model m version 1: replayed 3 warmup request(s)" in caplog.text
        # A version whose own warmup fails does not go live (at start-up it would fail the start).
        copy_version(saved_model(0.0), os.path.join(broken, "1.tmp"))
        write_warmup(os.path.join(broken, "1.tmp"), [request(examples(1), signature="nosig")])
        os.rename(os.path.join(broken, "1.tmp"), os.path.join(broken, "1"))
        server.poll_now()
        assert server.registry.model("broken").servables == {}
        assert "warmup record 0 failed" in caplog.text
    finally:
        server.stop()


def test_batching_returns_what_unbatched_calls_return(tmp_path):
    # The batch is triggered by count, not time: max_batch_size is exactly the rows of all
    # requests, and the timeout (60 s) is only a backstop, so the batch holds every request.
    n = 8
    sizes = [1 + i % 4 for i in range(n)]
    junk_at = 3
    sizes[junk_at] = 1
    base = make_base(str(tmp_path), {1: 0.0})
    server = start(model_name="m", model_base_path=base, enable_batching=True, max_batch_size=sum(sizes),
                   batch_timeout_micros=60_000_000, num_batch_threads=1)
    clients = Clients(server)
    results, errors = {}, {}

    def send(i):
        xs = examples(sizes[i], seed=100 + i)
        junk = tf.make_tensor_proto([b"not a tf.Example"], dtype=tf.string, shape=[1])
        req = request(xs, tensor=junk if i == junk_at else None)
        try:
            results[i] = (xs, clients.outputs(clients.predict(req, timeout=120)))
        except grpc.RpcError as e:
            errors[i] = e.code()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        assert not any(t.is_alive() for t in threads)
        # The junk request fails alone; its batch-mates are rerun and succeed.
        assert errors == {junk_at: grpc.StatusCode.INVALID_ARGUMENT}
        assert len(results) == n - 1
        for xs, outputs in results.values():
            assert_close(outputs, in_process(0.0, xs))
        stats = server.stats
        assert (stats.get("batches"), stats.get("batched_requests")) == (1, n), stats
    finally:
        clients.close()
        server.stop()


# ---- REST connections ---------------------------------------------------------------------

def test_half_sent_request_times_out_and_frees_its_worker(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="serving")
    base = make_base(str(tmp_path), {1: 0.0})
    server = start(model_name="m", model_base_path=base, rest_workers=1, rest_read_timeout_seconds=0.5)
    port = server.rest_port
    rest = server._rest
    xs = examples(2)
    body = json.dumps({"instances": b64(xs)}).encode()
    try:
        half = socket.create_connection(("127.0.0.1", port), timeout=30)
        half.sendall(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
                     + body[:20])
        deadline = time.monotonic() + 30
        while rest.busy < 1:  # the only worker now waits for the rest of that body
            assert time.monotonic() < deadline, "the half-sent request never reached a worker"
            time.sleep(0.01)
        # Served only once the stuck request's read deadline frees the worker.
        status, _, payload = raw_http(port, b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\n"
                                            b"Content-Length: %d\r\n\r\n" % len(body) + body, timeout=30)
        assert status == 200 and len(payload["predictions"]) == 2
        assert server.stats.get("rest_aborted") == 1
        answer = b""
        while True:
            chunk = half.recv(4096)
            if not chunk:
                break
            answer += chunk
        half.close()
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        aborted = [r for r in caplog.records if "aborted" in r.getMessage()]
        assert len(aborted) == 1 and aborted[0].exc_info is None
        assert "Traceback" not in caplog.text
    finally:
        server.stop()


def test_keep_alive_connection_carries_many_requests(served):
    port = served.server.rest_port
    body = json.dumps({"instances": b64(examples(2))}).encode()
    one = (b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(one * 3)  # pipelined: the server must answer all three, in order
        buf = b""
        while buf.count(b"HTTP/1.1 200 OK") < 3 or not buf.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, f"connection closed early: {buf!r}"
            buf += chunk
    assert b"Connection: close" not in buf


# ---- resource limits and reload -------------------------------------------------------------

def test_inflight_example_budget_answers_resource_exhausted(served):
    budget = served.server.registry.budget
    xs = examples(4)
    with contextlib.ExitStack() as others:  # other clients' requests, in flight
        left = budget.max_in_flight - 3
        while left:
            others.enter_context(budget.hold(min(left, EXAMPLE_CAP)))
            left -= min(left, EXAMPLE_CAP)
        with pytest.raises(grpc.RpcError) as info:
            served.predict(request(xs))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "in flight" in info.value.details()
        status, payload = served.http("/v1/models/m:predict", {"instances": b64(xs)})
        assert status == 429 and "in flight" in payload["error"]
        assert served.predict(request(xs[:3])).model_spec.version.value == 2
    assert budget.in_flight == 0
    assert served.predict(request(xs)).model_spec.version.value == 2


def test_reload_validates_base_paths_and_reports_load_failures(tmp_path):
    root = tmp_path / "models"
    base_a = make_base(str(root), {1: 0.0}, name="a")
    outside = make_base(str(tmp_path / "elsewhere"), {1: 0.0}, name="o")
    broken = root / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    server = start(build_config({"a": base_a}), model_base_path_prefix=str(root))
    clients = Clients(server)
    xs = examples(2)

    def reload(base, name="x"):
        req = model_management_pb2.ReloadConfigRequest()
        req.config.CopyFrom(build_config({"a": base_a, name: base}))
        with pytest.raises(grpc.RpcError) as info:
            clients.model_stub.HandleReloadConfigRequest(req, timeout=30)
        return info.value

    try:
        err = reload("models/a")
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "absolute" in err.details()
        err = reload(str(root / "nope"))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "does not exist" in err.details()
        err = reload(outside)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "--model_base_path_prefix" in err.details()
        assert sorted(server.registry.models) == ["a"], "a rejected config must change nothing"
        # server_core.cc: a model that does not load fails the reload, with the error.
        err = reload(str(root / "broken"), name="broken")
        assert err.code() == grpc.StatusCode.UNKNOWN
        assert "1 model(s) did not become available: {{broken due to error: version 1: " in err.details()
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = "broken"
        (state,) = clients.model_stub.GetModelStatus(status, timeout=10).model_version_status
        assert state.state == get_model_status_pb2.ModelVersionStatus.END and state.status.error_message
        assert clients.predict(request(xs, model="a")).model_spec.version.value == 1
    finally:
        clients.close()
        server.stop()


def test_startup_fails_when_an_initial_model_fails_to_load(tmp_path):
    from serving.errors import ServingError

    good = make_base(str(tmp_path), {1: 0.0}, name="good")
    broken = tmp_path / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    # server_core.cc WaitUntilModelsAvailable: the server does not start half-configured.
    with pytest.raises(ServingError) as info:
        start(build_config({"good": good, "broken": str(tmp_path / "broken")}))
    assert info.value.code == grpc.StatusCode.UNKNOWN
    assert str(info.value).startswith("UNKNOWN: 1 model(s) did not become available: {{broken due to error: "
                                      "version 1: saved_model.pb cannot be read")
    # A model with no version yet is not a failure: it starts empty and loads what appears.
    (tmp_path / "later").mkdir()
    server = start(build_config({"good": good, "later": str(tmp_path / "later")}))
    try:
        assert server.registry.model("later").servables == {}
        copy_version(saved_model(0.0), str(tmp_path / "later" / "3"))
        server.poll_now()
        assert list(server.registry.model("later").servables) == [3]
    finally:
        server.stop()


def test_the_model_config_file_is_polled_and_a_bad_one_keeps_the_models(tmp_path, caplog):
    from serving.config import write_models_config

    caplog.set_level(logging.INFO, logger="serving")
    base_a = make_base(str(tmp_path), {1: 0.0}, name="a")
    base_b = make_base(str(tmp_path), {2: 0.7}, name="b")
    path = str(tmp_path / "models.config")
    write_models_config(path, {"a": base_a})
    # A poll interval far beyond the test: poll_config_file() is the poller's one step, called here.
    server = start(read_config_file(path), model_config_file=path, model_config_file_poll_wait_seconds=3600)
    try:
        server.poll_config_file()
        assert "reloaded model config" not in caplog.text, "an unchanged file is not reapplied"
        write_models_config(path, {"a": base_a, "b": base_b})
        server.poll_config_file()
        assert sorted(server.registry.models) == ["a", "b"]
        assert list(server.registry.model("b").servables) == [2]
        with open(path, "a") as f:
            f.write("model_config_list {")
        server.poll_config_file()
        assert "Failed to read ModelServerConfig file: " in caplog.text
        assert "Error parsing text-format tensorflow.serving.ModelServerConfig" in caplog.text
        assert sorted(server.registry.models) == ["a", "b"], "a bad file changes nothing"
        write_models_config(path, {"b": base_b})
        server.poll_config_file()
        assert sorted(server.registry.models) == ["b"]
    finally:
        server.stop()


def test_cli_polls_the_model_config_file(tmp_path):
    from serving.config import write_models_config

    base_a = make_base(str(tmp_path), {1: 0.0}, name="a")
    base_b = make_base(str(tmp_path), {2: 0.7}, name="b")
    path = tmp_path / "models.config"
    write_models_config(str(path), {"a": base_a})
    proc, ports = _start_cli(tmp_path, f"--model_config_file={path}", "--model_config_file_poll_wait_seconds=0.2",
                             "--rest_api_port=0")
    try:
        _ready_line(proc)
        write_models_config(str(path), {"a": base_a, "b": base_b})
        with grpc.insecure_channel(f"127.0.0.1:{ports['grpc_port']}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            deadline = time.monotonic() + 60
            while True:
                try:
                    assert stub.Predict(request(examples(1), model="b"), timeout=30).model_spec.version.value == 2
                    break
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.NOT_FOUND and time.monotonic() < deadline, e.details()
                    time.sleep(0.1)
    finally:
        _stop_cli(proc)


def test_the_prometheus_page_counts_grpc_and_rest_requests(tmp_path):
    base = make_base(str(tmp_path), {1: 0.0})
    server = start(build_config({"m": base}), prometheus_path="/monitoring/prometheus/metrics")
    clients = Clients(server)
    try:
        xs = examples(2)
        clients.predict(request(xs))
        assert clients.http("/v1/models/m:predict", {"instances": b64(xs)})[0] == 200
        assert clients.http("/v1/models/nope:predict", {"instances": b64(xs)})[0] == 404
        with urllib.request.urlopen(f"http://127.0.0.1:{server.rest_port}/monitoring/prometheus/metrics",
                                    timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            lines = response.read().decode().splitlines()
        assert ':tensorflow:serving:request_count{model_name="m",status="OK"} 2' in lines
        assert ':tensorflow:serving:request_count{model_name="nope",status="NOT_FOUND"} 1' in lines
        for entrypoint in ("GRPC", "REST"):
            assert (f':tensorflow:serving:request_latency_count{{model_name="m",API="Predict",'
                    f'entrypoint="{entrypoint}"}} 1') in lines
    finally:
        clients.close()
        server.stop()


def test_grpc_also_answers_on_a_unix_socket_with_channel_arguments(tmp_path):
    from serving.model_server import parse_channel_arguments

    assert parse_channel_arguments("grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb") == [
        ("grpc.max_connection_age_ms", 2000), ("grpc.lb_policy_name", "grpclb")]
    with pytest.raises(ValueError, match="'nokey' is not key=value"):
        parse_channel_arguments("a=1,nokey")
    base = make_base(str(tmp_path), {1: 0.0})
    socket_path = str(tmp_path / "serving.sock")
    server = start(build_config({"m": base}), grpc_socket_path=socket_path,
                   grpc_channel_arguments="grpc.max_connection_age_ms=60000")
    try:
        with grpc.insecure_channel(f"unix:{socket_path}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            assert stub.Predict(request(examples(2)), timeout=30).model_spec.version.value == 1
    finally:
        server.stop()


def test_prefer_tflite_model_serves_model_tflite_with_its_signature_defs(tmp_path):
    from tests.serving import half_plus_two_tflite

    half_plus_two_tflite(str(tmp_path / "plain"))
    half_plus_two_tflite(str(tmp_path / "sigdef"), sigdef=True)
    config = build_config({"plain": str(tmp_path / "plain"), "sigdef": str(tmp_path / "sigdef")})
    server = start(config)
    try:
        assert server.registry.model("plain").servables == {}, "without the flag a model.tflite is not a version"
    finally:
        server.stop()
    server = start(config, prefer_tflite_model=True)
    clients = Clients(server)
    try:
        x = tf.make_tensor_proto(np.array([[2.0], [4.0]], np.float32))
        # Its own SignatureDefs (x -> y); without them one predict signature keyed by tensor names.
        for model, (inp, out) in {"sigdef": ("x", "y"), "plain": ("serving_default_x", None)}.items():
            req = predict_pb2.PredictRequest()
            req.model_spec.name = model
            req.inputs[inp].CopyFrom(x)
            resp = clients.predict(req)
            assert resp.model_spec.version.value == 123
            (name,) = resp.outputs
            assert out is None or name == out
            assert list(resp.outputs[name].float_val) == [3.0, 4.0]
    finally:
        clients.close()
        server.stop()


def test_reload_rpc_can_be_disabled(tmp_path):
    base = make_base(str(tmp_path), {1: 0.0}, name="a")
    server = start(build_config({"a": base}), enable_reload_config_request=False)
    clients = Clients(server)
    try:
        req = model_management_pb2.ReloadConfigRequest()
        req.config.CopyFrom(build_config({"a": base}))
        with pytest.raises(grpc.RpcError) as info:
            clients.model_stub.HandleReloadConfigRequest(req, timeout=30)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        clients.close()
        server.stop()


# ---- the CLI ------------------------------------------------------------------------------

def _start_cli(tmp_path, *args):
    """The CLI as a subprocess; returns (proc, ports) once its --port_file appears."""
    port_file = tmp_path / "ports.json"
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen([sys.executable, "-m", "serving.model_server", f"--port_file={port_file}",
                             "--port=0", "--file_system_poll_wait_seconds=0", *args],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate(timeout=30)
            pytest.fail(f"server never wrote {port_file}: {err}")
        time.sleep(0.05)
    return proc, json.loads(port_file.read_text())


def _ready_line(proc, timeout=30) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no ready line on stdout"
    return proc.stdout.readline()


def _stop_cli(proc) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return err


def test_cli_serves_a_models_config(tmp_path):
    base = make_base(str(tmp_path), {4: 0.7})
    config_path = tmp_path / "models.config"
    from serving.config import write_models_config
    write_models_config(str(config_path), {"m": base})
    proc, ports = _start_cli(tmp_path, f"--model_config_file={config_path}", "--rest_api_port=0")
    try:
        # --rest_api_port=0 is TF Serving's "no REST".
        assert ports["rest_port"] == 0 and ports["grpc_port"] > 0
        line = _ready_line(proc)
        assert line.split() == ["ready", f"grpc_port={ports['grpc_port']}", "rest_port=0"]
        with grpc.insecure_channel(f"127.0.0.1:{ports['grpc_port']}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            xs = examples(3)
            resp = stub.Predict(request(xs), timeout=30)
        assert resp.model_spec.version.value == 4
        assert_close({k: tf.make_ndarray(v) for k, v in resp.outputs.items()}, in_process(0.7, xs))
    finally:
        err = _stop_cli(proc)
    assert "loaded model m version 4" in err and "unloaded model m version 4" in err


def test_cli_names_a_bad_config_file_as_tf_serving_does(tmp_path):
    config_path = tmp_path / "models.config"
    config_path.write_text('model_config_list { config { name: "m" base_path: }')
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-m", "serving.model_server", f"--model_config_file={config_path}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    # TF Serving's own test (testBadModelConfig) looks for protobuf's text on stderr.
    assert f"{config_path}: Error parsing text-format tensorflow.serving.ModelServerConfig: 1:" in done.stderr


def test_cli_port_file_names_both_bound_ports(tmp_path):
    base = make_base(str(tmp_path), {2: 0.0})
    proc, ports = _start_cli(tmp_path, "--model_name=m", f"--model_base_path={base}", "--rest_api_port=-1")
    try:
        assert set(ports) == {"grpc_port", "rest_port"}
        assert ports["rest_port"] > 0 and ports["grpc_port"] > 0
        assert not (tmp_path / "ports.json.tmp").exists()
        assert _ready_line(proc).split() == ["ready", f"grpc_port={ports['grpc_port']}",
                                             f"rest_port={ports['rest_port']}"]
        # Written after the initial load: the first request already has a version.
        xs = examples(2)
        req = urllib.request.Request(f"http://127.0.0.1:{ports['rest_port']}/v1/models/m:predict",
                                     data=json.dumps({"instances": b64(xs)}).encode())
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200
            rows = json.loads(resp.read())["predictions"]
        assert_close({k: [r[k] for r in rows] for k in rows[0]}, in_process(0.0, xs))
        with grpc.insecure_channel(f"127.0.0.1:{ports['grpc_port']}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            assert stub.Predict(request(xs), timeout=30).model_spec.version.value == 2
    finally:
        _stop_cli(proc)


def test_cli_runtime_settings_serve_concurrent_clients_across_a_swap(tmp_path):
    """The CLI's own gRPC polling and TF thread settings (serving/runtime.py): concurrent
    clients with different batches each get their own rows, from the version that answered,
    while a new version swaps in."""
    base = make_base(str(tmp_path), {1: 0.0})
    proc, ports = _start_cli(tmp_path, "--model_name=m", f"--model_base_path={base}", "--rest_api_port=0",
                             "--file_system_poll_wait_seconds=0.1", "--version_settle_seconds=0",
                             "--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=2")
    bias = {1: 0.0, 2: 0.7}
    batches = [examples(n, seed=n) for n in (1, 3, 7, 16, 2, 64)]
    expected = {(v, i): in_process(b, xs)["click"] for v, b in bias.items() for i, xs in enumerate(batches)}
    seen, failures, wrong, stop = [], [], [], threading.Event()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{ports['grpc_port']}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

            def client(i):
                deadline = time.monotonic() + 60
                while not stop.is_set() and time.monotonic() < deadline:
                    try:
                        resp = stub.Predict(request(batches[i]), timeout=30)
                    except grpc.RpcError as e:
                        failures.append(f"{e.code()}: {e.details()}")
                        continue
                    v = resp.model_spec.version.value
                    got = tf.make_ndarray(resp.outputs["click"])
                    if got.shape != expected[(v, i)].shape or not np.allclose(got, expected[(v, i)], atol=1e-5):
                        wrong.append((i, v))
                    seen.append(v)

            threads = [threading.Thread(target=client, args=(i,)) for i in range(len(batches))]
            for t in threads:
                t.start()
            try:
                while len(seen) < 50 and all(t.is_alive() for t in threads):
                    time.sleep(0.01)
                staging = copy_version(saved_model(0.7), str(tmp_path / "staging"))
                os.rename(staging, os.path.join(base, "2"))
                deadline = time.monotonic() + 60
                while seen.count(2) < 50 and time.monotonic() < deadline:
                    time.sleep(0.01)
            finally:
                stop.set()
                for t in threads:
                    t.join(timeout=60)
    finally:
        err = _stop_cli(proc)
    assert failures == [] and wrong == []
    assert seen.count(1) >= 50 and seen.count(2) >= 50
    assert "Unknown experiment" not in err and "thread settings left" not in err


def test_runtime_settings_only_apply_before_the_runtimes_start():
    from serving import runtime

    # This process has imported grpc and (now, whatever ran before) run a TF op: both are no-ops here.
    tf.constant(1.0) + 1
    assert runtime.configure_tensorflow(intra_op=1) is False
    assert runtime.prefer_queue_polling() is False
    code = ("import os; from serving import runtime; "
            "print(runtime.prefer_queue_polling(), os.environ.get('GRPC_EXPERIMENTS')); "
            "print(runtime.configure_tensorflow(1, 1)); import tensorflow as tf; "
            "from tensorflow.python.eager import context; tf.constant(1.0) + 1; "
            "print(tf.config.threading.get_intra_op_parallelism_threads(), "
            "context.context().config.experimental.disable_thread_spinning)")
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=dict(env, TF_CPP_MIN_LOG_LEVEL="2"),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    grpcio = tuple(int(p) for p in grpc.__version__.split(".")[:2])
    assert lines[0] == (f"True {runtime._GRPC_EXPERIMENTS}" if grpcio in runtime._GRPC_VERSIONS else "False None")
    assert lines[1:3] == ["True", "1 True"]


def test_cli_wakes_on_a_signal_delivered_to_another_thread():
    """The kernel may hand SIGTERM to any of gRPC's or TF's threads; the CLI must still stop
    (an untimed Event.wait() in the main thread slept through it, and CI timed out)."""
    code = ("import signal, threading, time\n"
            "from serving.model_server import shutdown_event, wait_for\n"
            "done = shutdown_event()\n"
            "def worker():\n"
            "    time.sleep(0.5)\n"
            "    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)\n"
            "threading.Thread(target=worker, daemon=True).start()\n"
            "wait_for(done)\n"
            "print('stopped')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert out.returncode == 0 and out.stdout == "stopped\n", out.stderr
