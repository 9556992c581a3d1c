"""The embedded model server against TF Serving's protocol, on tiny SavedModels.

Every server here runs in-process on ports picked by the OS; one test also starts the
CLI as a subprocess. Clients are the official tensorflow_serving stubs and plain HTTP.
"""

import base64
import json
import logging
import os
import shutil
import signal
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
from tensorflow_serving.config import model_server_config_pb2

from serving.config import build_config
from serving.model_server import ModelServer
from tests.serving import K, copy_version, examples, in_process, make_base, saved_model, write_warmup

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_BYTES = 64 * 1024


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
    server = start(config, max_request_bytes=MAX_BYTES)
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
    assert set(sdm.signature_def) == {"serving_default", "knowledge"}
    sdef = sdm.signature_def["serving_default"]
    assert list(sdef.inputs) == ["examples"] and sdef.inputs["examples"].dtype == tf.string.as_datatype_enum
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
    assert served.http("/v1/models/nope")[0] == 404


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
        ("unknown model", request(xs, model="nope"), grpc.StatusCode.NOT_FOUND, "nope"),
        ("unknown version", request(xs, version=99), grpc.StatusCode.NOT_FOUND, "99"),
        ("unknown label", request(xs, label="canary"), grpc.StatusCode.NOT_FOUND, "canary"),
        ("wrong signature", request(xs, signature="nosig"), grpc.StatusCode.INVALID_ARGUMENT, "nosig"),
        ("missing input", missing, grpc.StatusCode.INVALID_ARGUMENT, "examples"),
        ("wrong dtype", request(xs, tensor=floats), grpc.StatusCode.INVALID_ARGUMENT, "examples"),
        ("wrong shape", request(xs, tensor=matrix), grpc.StatusCode.INVALID_ARGUMENT, "examples"),
        ("undecodable example", request(xs, tensor=garbage), grpc.StatusCode.INVALID_ARGUMENT, "examples"),
        ("unknown output", request(xs, output_filter=["ctr"]), grpc.StatusCode.INVALID_ARGUMENT, "ctr"),
        ("over size cap", request(big), grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
        ("no loadable version", request(xs, model="empty"), grpc.StatusCode.UNAVAILABLE, "empty"),
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


def test_bad_rest_requests_get_tf_serving_codes(served):
    xs = b64(examples(2))
    garbage = [{"b64": base64.b64encode(b"not a tf.Example").decode()}]
    cases = [
        ("unknown model", "/v1/models/nope:predict", {"instances": xs}, 404, "nope"),
        ("unknown version", "/v1/models/m/versions/99:predict", {"instances": xs}, 404, "99"),
        ("unknown label", "/v1/models/m/labels/canary:predict", {"instances": xs}, 404, "canary"),
        ("wrong signature", "/v1/models/m:predict", {"signature_name": "nosig", "instances": xs}, 400, "nosig"),
        ("missing input", "/v1/models/m:predict", {"instances": [{"wrong": x} for x in xs]}, 400, "examples"),
        ("wrong dtype", "/v1/models/m:predict", {"instances": [1.5, 2.5]}, 400, "examples"),
        ("wrong shape", "/v1/models/m:predict", {"instances": [xs]}, 400, "examples"),
        ("ragged", "/v1/models/m:predict", {"inputs": [xs, [xs[0]]]}, 400, "examples"),
        ("bad base64", "/v1/models/m:predict", {"instances": [{"b64": "%%%"}]}, 400, "examples"),
        ("undecodable example", "/v1/models/m:predict", {"instances": garbage}, 400, "examples"),
        ("no instances", "/v1/models/m:predict", {"signature_name": "serving_default"}, 400, "instances"),
        ("no loadable version", "/v1/models/empty:predict", {"instances": xs}, 503, "empty"),
        ("path in name", "/v1/models/..:predict", {"instances": xs}, 400, ".."),
        ("encoded separator", "/v1/models/a%2Fb:predict", {"instances": xs}, 400, "a/b"),
        ("bad version", "/v1/models/m/versions/x:predict", {"instances": xs}, 400, "x"),
        ("unknown verb", "/v1/models/m:classify", {"instances": xs}, 501, "classify"),
        ("unknown path", "/v2/whatever", {"instances": xs}, 404, "/v2/whatever"),
    ]
    for what, path, body, status, needle in cases:
        got, payload = served.http(path, body)
        assert got == status, f"{what}: {got} {payload}"
        assert needle in payload["error"], f"{what}: {payload}"
        assert served.http("/v1/models/m:predict", {"instances": xs})[0] == 200, f"broken after {what}"
    got, payload = served.http("/v1/models/m:predict", raw=b"{not json")
    assert got == 400 and "JSON" in payload["error"]
    got, payload = served.http("/v1/models/m:predict", raw=b"x" * (MAX_BYTES + 1))
    assert got == 429 and "limit" in payload["error"]
    assert served.http("/v1/models/m:predict", {"instances": xs})[0] == 200


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
        thread.join()
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
    broken = make_base(str(tmp_path), {1: 0.0}, name="broken")
    write_warmup(os.path.join(broken, "1"), [request(examples(1), signature="nosig")])
    server = start(build_config({"m": base, "broken": broken}))
    try:
        assert server.stats["warmup_requests"] == 3
        assert "model m version 1: replayed 3 warmup request(s)" in caplog.text
        # A version whose own warmup fails does not go live.
        assert server.registry.model("broken").servables == {}
        assert "warmup record 0 failed" in caplog.text
    finally:
        server.stop()


def test_batching_returns_what_unbatched_calls_return(tmp_path):
    base = make_base(str(tmp_path), {1: 0.0})
    server = start(model_name="m", model_base_path=base, enable_batching=True, max_batch_size=32,
                   batch_timeout_micros=100_000, num_batch_threads=1)
    clients = Clients(server)
    n = 10
    barrier = threading.Barrier(n)
    results, errors = {}, {}

    def send(i):
        xs = examples(1 + i % 4, seed=100 + i)
        signature = "knowledge" if i % 5 == 4 else "serving_default"
        junk = tf.make_tensor_proto([b"not a tf.Example"], dtype=tf.string, shape=[1])
        req = request(xs, signature=signature, tensor=junk if i == 3 else None)
        barrier.wait()
        try:
            results[i] = (xs, signature, clients.outputs(clients.predict(req)))
        except grpc.RpcError as e:
            errors[i] = e.code()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    try:
        # The junk request fails alone; its batch-mates are rerun and succeed.
        assert errors == {3: grpc.StatusCode.INVALID_ARGUMENT}
        for xs, signature, outputs in results.values():
            assert_close(outputs, in_process(0.0, xs, signature))
        stats = server.stats
        assert stats.get("batched_requests", 0) > stats.get("batches", 0) > 0, stats
    finally:
        clients.close()
        server.stop()


# ---- the CLI ------------------------------------------------------------------------------

def test_cli_serves_a_models_config(tmp_path):
    base = make_base(str(tmp_path), {4: 0.7})
    config_path = tmp_path / "models.config"
    from serving.config import write_models_config
    write_models_config(str(config_path), {"m": base})
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen([sys.executable, "-m", "serving.model_server", f"--model_config_file={config_path}",
                             "--port=0", "--rest_api_port=0", "--file_system_poll_wait_seconds=0"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("ready "), proc.stderr.read()
        port = int(dict(kv.split("=") for kv in line.split()[1:])["grpc_port"])
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            xs = examples(3)
            resp = stub.Predict(request(xs), timeout=30)
        assert resp.model_spec.version.value == 4
        assert_close({k: tf.make_ndarray(v) for k, v in resp.outputs.items()}, in_process(0.7, xs))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "loaded model m version 4" in err and "unloaded model m version 4" in err
