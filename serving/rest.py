"""The REST front end: TF Serving's /v1/models API over HTTP/1.1.

    GET  /v1/models/<name>[/versions/<v>|/labels/<l>]            model status
    GET  /v1/models/<name>[/versions/<v>|/labels/<l>]/metadata   signature metadata
    POST /v1/models/<name>[/versions/<v>|/labels/<l>]:predict    {"instances": [...]} or {"inputs": ...}
    POST /v1/models/<name>[/versions/<v>|/labels/<l>]:classify   {"examples": [{feature: value}], "context": {...}}
    POST /v1/models/<name>[/versions/<v>|/labels/<l>]:regress    the same

JSON bodies and errors ({"error": "..."} with TF Serving's HTTP status) follow
TF Serving's REST API; binary strings travel as {"b64": "..."}. The version that
answered a predict is also sent in an `X-Model-Version` header (TF Serving has none).

The HTTP stack: h11 (already in requirements.lock) parses requests, and this module
owns the sockets. Why not http.server: it writes headers and body separately (with
delayed ACK that stalled every keep-alive request), has no read deadline, and
runs a thread per connection without limit. Why not tornado: its malformed-request
handling (drop the connection, or HTML) is not TF Serving's JSON 400, and its event
loop would still need a thread pool for TF. Here:

  * each response goes out in one `sendall`, on TCP_NODELAY sockets;
  * a request must arrive whole within `read_timeout_s` (every recv waits only for
    what is left of that deadline, so trickling bytes does not extend it); a late one
    gets 408 and its connection is closed, with one log line and no traceback;
  * a fixed pool of `workers` threads serves requests; idle keep-alive connections
    wait in one selector thread, not in a worker. When every worker is busy the
    selector stops accepting and reading: new clients wait in the kernel backlog
    (back-pressure), nothing grows without bound. Idle connections close after
    `idle_timeout_s`.
"""

import base64
import binascii
import json
import logging
import os
import queue
import re
import selectors
import socket
import threading
import time
import urllib.parse
from typing import Callable, Dict, List, Optional, Tuple

import h11

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     regression_pb2)

from serving import grpc_service
from serving.config import check_model_name
from serving.errors import ServingError, invalid, resource_exhausted
from serving.servable import DEFAULT_SIGNATURE, Signature, check_input_names
from serving.versions import ModelRegistry

log = logging.getLogger("serving")



def _proto_json(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     including_default_value_fields=True)


def _is_b64(value) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _dims(value) -> List[int]:
    dims = []
    while isinstance(value, list):
        dims.append(len(value))
        if not value:
            break
        value = value[0]
    return dims


def _flatten(value, dims, depth, out, name):
    if depth == len(dims):
        if isinstance(value, list):
            raise invalid(f"input {name!r} is ragged: nested lists must all have the same shape")
        out.append(value)
        return
    if not isinstance(value, list) or len(value) != dims[depth]:
        raise invalid(f"input {name!r} is ragged: nested lists must all have the same shape")
    for item in value:
        _flatten(item, dims, depth + 1, out, name)


def _string_leaf(value, name) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if _is_b64(value) and isinstance(value["b64"], str):
        try:
            # strict_mode: what b64decode(validate=True) checks, without its per-call regex.
            return binascii.a2b_base64(value["b64"], strict_mode=True)
        except (binascii.Error, ValueError) as e:
            raise invalid(f"input {name!r}: {{\"b64\": ...}} is not valid base64: {e}") from e
    raise invalid(f"input {name!r} expects strings or {{\"b64\": ...}} objects, got {json.dumps(value)[:80]}")


def json_to_array(value, spec: tf.TensorSpec, name: str) -> np.ndarray:
    """A JSON value as an array of the signature's dtype; anything else names the input."""
    dims = _dims(value)
    if spec.dtype == tf.string and len(dims) == 1:
        # The common case (a batch of serialized tf.Examples): no nesting to walk; a
        # nested list among the leaves is refused by _string_leaf.
        arr = np.empty(dims[0], dtype=object)
        arr[:] = [_string_leaf(v, name) for v in value]
        return arr
    flat: list = []
    _flatten(value, dims, 0, flat, name)
    if spec.dtype == tf.string:
        arr = np.empty(len(flat), dtype=object)
        arr[:] = [_string_leaf(v, name) for v in flat]
        return arr.reshape(dims)
    for v in flat:
        if isinstance(v, (str, dict, type(None))):
            raise invalid(f"input {name!r} expects {spec.dtype.name} numbers, got {json.dumps(v)[:80]}")
    try:
        return np.asarray(flat, dtype=spec.dtype.as_numpy_dtype).reshape(dims)
    except (ValueError, OverflowError, TypeError) as e:
        raise invalid(f"input {name!r}: values do not fit dtype {spec.dtype.name}: {e}") from e


def _array_to_json(name: str, array: np.ndarray):
    if array.dtype.kind in ("O", "S"):
        # TF Serving's rule: only outputs named *_bytes are base64-encoded.
        encode = ((lambda b: {"b64": base64.b64encode(b).decode("ascii")}) if name.endswith("_bytes")
                  else (lambda b: b.decode("utf-8", errors="replace")))
        return np.vectorize(encode, otypes=[object])(array).tolist() if array.size else array.tolist()
    return array.tolist()


def parse_predict_body(body: dict, sig: Signature) -> Tuple[Dict[str, np.ndarray], bool]:
    """(inputs, row_format) from a predict request body."""
    if "instances" in body and "inputs" in body:
        raise invalid("request body must have either 'instances' or 'inputs', not both")
    single = next(iter(sig.inputs)) if len(sig.inputs) == 1 else None
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise invalid("'instances' must be a list")
        named = [isinstance(i, dict) and not _is_b64(i) for i in instances]
        if instances and all(named):
            names = set(instances[0])
            for n, inst in enumerate(instances):
                if set(inst) != names:
                    raise invalid(f"instance {n} has inputs {sorted(inst)}, instance 0 has {sorted(names)}")
            check_input_names(sig, names)
            return {k: json_to_array([i[k] for i in instances], sig.inputs[k], k) for k in names}, True
        if any(named):
            raise invalid("'instances' mixes named objects and plain values")
        if single is None:
            raise invalid(f"signature {sig.name!r} has inputs {sorted(sig.inputs)}: each instance must be "
                          "an object naming them")
        return {single: json_to_array(instances, sig.inputs[single], single)}, True
    if "inputs" in body:
        inputs = body["inputs"]
        if isinstance(inputs, dict) and not _is_b64(inputs):
            check_input_names(sig, inputs)
            return {k: json_to_array(v, sig.inputs[k], k) for k, v in inputs.items()}, False
        if single is None:
            raise invalid(f"signature {sig.name!r} has inputs {sorted(sig.inputs)}: 'inputs' must be an "
                          "object naming them")
        return {single: json_to_array(inputs, sig.inputs[single], single)}, False
    raise invalid("request body must have 'instances' (row format) or 'inputs' (columnar format)")


def format_predict(outputs: Dict[str, np.ndarray], row_format: bool) -> dict:
    converted = {k: _array_to_json(k, v) for k, v in outputs.items()}
    if not row_format:
        return {"outputs": next(iter(converted.values())) if len(converted) == 1 else converted}
    sizes = {v.shape[0] if v.ndim else None for v in outputs.values()}
    if len(sizes) != 1 or None in sizes:
        raise invalid("outputs do not share a batch dimension; use the columnar 'inputs' format")
    if len(converted) == 1:
        return {"predictions": next(iter(converted.values()))}
    names = list(converted)
    return {"predictions": [dict(zip(names, row)) for row in zip(*(converted[k] for k in names))]}



# TF Serving routes only /v1/... to its REST handler (http_server.cc, kPathRegex); the rest is 404.
_V1 = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
# http_rest_api_util.cc ParseModelInfo: versions are ASCII digits (RE2 \d), verbs are these three.
_MODEL = re.compile(r"/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
                    r"(?::(?P<verb>classify|regress|predict))?(?:/(?P<metadata>metadata))?", re.ASCII)
_INT64_MAX = (1 << 63) - 1
# A body this much over the cap is not read at all; the connection is simply closed.
_MAX_DRAIN_FACTOR = 4
_MAX_HEAD_BYTES = 64 << 10
_CORS = [("Access-Control-Allow-Origin", "*"), ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
         ("Access-Control-Allow-Headers", "Content-Type")]
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            408: "Request Timeout", 409: "Conflict", 429: "Too Many Requests", 499: "Client Closed Request",
            500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
            504: "Gateway Timeout"}


def malformed(method: str, path: str) -> ServingError:
    # http_rest_api_handler.cc ProcessRequest's default status.
    return invalid(f"Malformed request: {method} {path}")


def _request_examples(body: dict) -> int:
    """Rows a predict body declares, counted before any conversion."""
    if "instances" in body and isinstance(body["instances"], list):
        return len(body["instances"])
    inputs = body.get("inputs")
    if isinstance(inputs, dict):
        return max((len(v) for v in inputs.values() if isinstance(v, list)), default=1)
    return len(inputs) if isinstance(inputs, list) else 1


def handle(registry: ModelRegistry, method: str, target: str, body: bytes,
           metrics_path: Optional[str] = None) -> Tuple[int, object, list]:
    """(status, JSON payload or a text page, extra headers) for one request; never raises.
    `metrics_path`: where GET answers the Prometheus page (--monitoring_config_file)."""
    path = urllib.parse.urlsplit(target).path
    try:
        if metrics_path and path == metrics_path and method == "GET":
            return 200, registry.metrics.prometheus_page(), []
        if not _V1.fullmatch(path):
            return 404, {"error": f"Not found: {method} {path}"}, []
        match = _MODEL.fullmatch(path)
        if method not in ("GET", "POST") or match is None:
            return 400, {"error": malformed(method, path).message}, (_CORS if method == "OPTIONS" else [])
        if method == "GET" and match["verb"] or method == "POST" and (not match["verb"] or match["metadata"]):
            raise malformed(method, path)
        name = check_model_name(urllib.parse.unquote(match["name"]))
        version = match["version"]
        if version is not None:
            version = int(version)
            if version > _INT64_MAX:
                # http_rest_api_util.cc: SimpleAtoi into int64 fails.
                raise invalid(f"Failed to convert version: {match['version']} to numeric.")
        label = urllib.parse.unquote(match["label"]) if match["label"] else None
        if method == "GET":
            return 200, _get(registry, name, version, label, bool(match["metadata"])), []
        with registry.metrics.request(name, match["verb"].capitalize(), "REST"):
            if match["verb"] != "predict":
                return _classify_or_regress(registry, match["verb"], name, version, label, body)
            return _predict(registry, name, version, label, body)
    except ServingError as e:
        return e.http_status, {"error": e.message}, []
    except RecursionError:
        return 400, {"error": "JSON parse error: the request nests too deeply"}, []
    except Exception as e:  # noqa: BLE001 - keep serving; one line, the client gets the text
        log.error("REST %s %s failed: %s: %s", method, path, type(e).__name__, e)
        return 500, {"error": f"{type(e).__name__}: {e}"}, []


def _get(registry, name, version, label, metadata: bool) -> dict:
    if metadata:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    else:
        request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    elif label:
        request.model_spec.version_label = label
    if metadata:
        response = grpc_service.model_metadata(registry, request)
        sdm = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(sdm)
        return {"model_spec": _proto_json(response.model_spec), "metadata": {"signature_def": _proto_json(sdm)}}
    return _proto_json(grpc_service.model_status(registry, request))


def _json_body(body_bytes: bytes) -> dict:
    try:
        body = json.loads(body_bytes)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise invalid(f"JSON parse error: {e}") from e
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object")
    return body


def _json_type(value) -> str:
    """rapidjson's type names, as json_tensor.cc's JsonTypeString."""
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


_KINDS = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}


def _add_feature_value(value, name: str, feature: feature_pb2.Feature) -> None:
    """json_tensor.cc AddValueToFeature: a float is a float_list value, an integer or a boolean an
    int64_list one, a string or {"b64": ...} a bytes_list one; one kind per feature."""
    if isinstance(value, int):  # booleans too: True is 1
        kind, add = "int64_list", int(value)
        if add > _INT64_MAX:
            raise invalid(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
    elif isinstance(value, float):
        kind, add = "float_list", value
    elif isinstance(value, str):
        kind, add = "bytes_list", value.encode("utf-8")
    elif _is_b64(value) and isinstance(value["b64"], str):
        kind, add = "bytes_list", _string_leaf(value, name)
    else:
        raise invalid(f"Feature: {name} has element with unexpected JSON type: {_json_type(value)}")
    have = feature.WhichOneof("kind")
    if have not in (None, kind):
        raise invalid(f"Unexpected element type in feature: {name} expecting type: {_KINDS[have]}")
    getattr(feature, kind).value.append(add)


def example_from_json(value, into: example_pb2.Example) -> None:
    """json_tensor.cc MakeExampleFromJsonObject: {feature: value or [values]} into a tf.Example."""
    if not isinstance(value, dict):
        raise invalid(f"Example must be JSON object but got JSON {_json_type(value)}")
    for name, content in value.items():
        feature = feature_pb2.Feature()
        for v in content if isinstance(content, list) else [content]:
            _add_feature_value(v, name, feature)
        into.features.feature[name].CopyFrom(feature)


def classify_regress_request(body: dict, request) -> None:
    """json_tensor.cc FillClassifyRegressRequestFromJson, into a Classification/RegressionRequest."""
    if "signature_name" in body:
        if not isinstance(body["signature_name"], str):
            raise invalid("'signature_name' key must be a string value.")
        request.model_spec.signature_name = body["signature_name"]
    has_context = "context" in body
    if has_context:
        example_from_json(body["context"], request.input.example_list_with_context.context)
    examples = body.get("examples")
    # TF Serving's text says "classify" for both methods.
    if "examples" not in body:
        raise invalid("When method is classify, key 'examples' is expected and was not found")
    if not isinstance(examples, list):
        raise invalid("Expecting 'examples' value to be an list/array")
    if not examples:
        raise invalid("'examples' value is an empty array")
    target = request.input.example_list_with_context if has_context else request.input.example_list
    for value in examples:
        example_from_json(value, target.examples.add())


def _classify_or_regress(registry, verb: str, name, version, label, body_bytes: bytes) -> Tuple[int, dict, list]:
    """http_rest_api_handler.cc ProcessClassifyRequest / ProcessRegressRequest and json_tensor.cc's
    MakeJsonFromClassificationResult / MakeJsonFromRegressionResult."""
    body = _json_body(body_bytes)
    request = (classification_pb2.ClassificationRequest() if verb == "classify"
               else regression_pb2.RegressionRequest())
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    elif label:
        request.model_spec.version_label = label
    classify_regress_request(body, request)
    if verb == "classify":
        result = grpc_service.classify(registry, request).result
        payload = {"results": [[[c.label, c.score] for c in row.classes] for row in result.classifications]}
    else:
        result = grpc_service.regress(registry, request).result
        payload = {"results": [r.value for r in result.regressions]}
    return 200, payload, []


def _predict(registry, name, version, label, body_bytes: bytes) -> Tuple[int, dict, list]:
    body = _json_body(body_bytes)
    servable = registry.resolve(name, version, label)
    signature = body.get("signature_name") or DEFAULT_SIGNATURE
    if not isinstance(signature, str):
        raise invalid("'signature_name' must be a string")
    if signature not in servable.signatures:
        # http_rest_api_handler.cc GetInfoMap (REST says INVALID_ARGUMENT; gRPC FAILED_PRECONDITION).
        raise invalid(f"Serving signature name: \"{signature}\" not found in signature def")
    if isinstance(body.get("instances"), list) and not body["instances"]:
        # util/json_tensor.cc, FillPredictRequestFromJson.
        raise invalid("No values in 'instances' array")
    n = _request_examples(body)
    with registry.budget.hold(n):
        sig = servable.signature(signature)
        inputs, row_format = parse_predict_body(body, sig)
        outputs = servable.predict(signature, inputs)
        payload = format_predict(outputs, row_format)
    return 200, payload, [("X-Model-Version", str(servable.version))]


def _response(status: int, payload, headers=(), close: bool = False) -> bytes:
    """Status line, headers and body as one buffer: one write, no small-segment stall. A str payload is
    a text page (Prometheus' exposition format), anything else JSON."""
    text = isinstance(payload, str)
    data = payload.encode("utf-8") if text else json.dumps(payload).encode("utf-8")
    kind = "text/plain; version=0.0.4" if text else "application/json"
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", f"Content-Type: {kind}",
            f"Content-Length: {len(data)}"]
    head += [f"{k}: {v}" for k, v in headers]
    if close:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data


class _ReadTimeout(Exception):
    pass


class _Conn:
    __slots__ = ("sock", "peer", "buffered", "idle_since")

    def __init__(self, sock, peer):
        self.sock = sock
        self.peer = peer
        self.buffered = b""  # bytes received past the previous request (pipelining)
        self.idle_since = 0.0


class RestServer:
    """TF Serving's REST API on a bounded worker pool; `serve_forever()` runs the selector."""

    def __init__(self, address: Tuple[str, int], registry: ModelRegistry, max_request_bytes: int,
                 workers: Optional[int] = None, read_timeout_s: float = 30.0, idle_timeout_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, metrics_path: Optional[str] = None):
        self.registry = registry
        self.metrics_path = metrics_path
        self.max_request_bytes = max_request_bytes
        self.read_timeout_s = read_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self._clock = clock
        # TF won't use more than the cores; a few more threads cover I/O waits.
        self.workers = workers or max(4, 2 * (os.cpu_count() or 1))
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._listener = socket.create_server(address, family=family, backlog=128)
        self._listener.setblocking(False)
        self.server_address = self._listener.getsockname()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._jobs: "queue.SimpleQueue" = queue.SimpleQueue()
        self._returned: "queue.SimpleQueue" = queue.SimpleQueue()
        self._free = threading.Semaphore(self.workers)
        self._busy_lock = threading.Lock()
        self.busy = 0  # workers holding a connection now (tests, ops)
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._threads = [threading.Thread(target=self._work, name=f"rest-{i}", daemon=True)
                         for i in range(self.workers)]
        for t in self._threads:
            t.start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    # ---- selector thread --------------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, None)
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        idle: Dict[socket.socket, _Conn] = {}
        try:
            while not self._stopping.is_set():
                while True:
                    try:
                        conn = self._returned.get_nowait()
                    except queue.Empty:
                        break
                    conn.idle_since = self._clock()
                    idle[conn.sock] = conn
                    sel.register(conn.sock, selectors.EVENT_READ, conn)
                # Back-pressure: with no free worker, read nothing and accept nothing.
                if not self._free.acquire(timeout=poll_interval):
                    self._sweep(sel, idle)
                    continue
                dispatched = False
                for key, _ in sel.select(timeout=poll_interval):
                    if key.data == "wake":
                        try:
                            self._wake_r.recv(4096)
                        except BlockingIOError:
                            pass
                        continue
                    if dispatched:
                        continue  # level-triggered: reported again next round
                    if key.data is None:
                        try:
                            sock, peer = self._listener.accept()
                        except (BlockingIOError, InterruptedError):
                            continue
                        except OSError as e:  # e.g. EMFILE: keep serving open connections
                            log.warning("REST accept failed: %s", e)
                            time.sleep(0.1)
                            continue
                        sock.setblocking(True)
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        conn = _Conn(sock, peer)
                    else:
                        conn = key.data
                        sel.unregister(conn.sock)
                        idle.pop(conn.sock, None)
                    self._jobs.put(conn)
                    dispatched = True
                if not dispatched:
                    self._free.release()
                self._sweep(sel, idle)
        finally:
            for conn in idle.values():
                self._close(conn)
            sel.close()
            self._stopped.set()

    def _sweep(self, sel, idle: Dict[socket.socket, "_Conn"]) -> None:
        now = self._clock()
        for sock, conn in list(idle.items()):
            if now - conn.idle_since > self.idle_timeout_s:
                sel.unregister(sock)
                del idle[sock]
                self._close(conn)

    def shutdown(self) -> None:
        self._stopping.set()
        self._wake()
        self._stopped.wait(timeout=10)
        for _ in self._threads:
            self._jobs.put(None)

    def server_close(self) -> None:
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    # ---- workers ----------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            conn = self._jobs.get()
            if conn is None:
                return
            with self._busy_lock:
                self.busy += 1
            keep = False
            try:
                keep = self._serve_one(conn)
                while keep and conn.buffered:  # pipelined: already read, the selector won't see it
                    keep = self._serve_one(conn)
            except Exception as e:  # noqa: BLE001 - a worker must survive any one connection
                log.error("REST connection from %s failed: %s: %s", conn.peer, type(e).__name__, e)
            with self._busy_lock:
                self.busy -= 1
            if keep and not self._stopping.is_set():
                self._returned.put(conn)
                self._wake()
            else:
                self._close(conn)
            self._free.release()

    @staticmethod
    def _close(conn: _Conn) -> None:
        try:
            conn.sock.close()
        except OSError:
            pass

    def _abort(self, conn: _Conn, why: str, status: Optional[int] = None, payload: Optional[dict] = None) -> bool:
        """One log line per aborted request, no traceback; the connection is closed."""
        self.registry.stats.add("rest_aborted")
        log.warning("REST request from %s aborted: %s", conn.peer[0] if conn.peer else "?", why)
        if status is not None:
            try:
                conn.sock.sendall(_response(status, payload or {"error": why}, close=True))
            except OSError:
                pass
        return False

    def _recv_event(self, h, conn: _Conn, deadline: float):
        while True:
            event = h.next_event()
            if event is not h11.NEED_DATA:
                return event
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise _ReadTimeout
            conn.sock.settimeout(remaining)
            try:
                data = conn.sock.recv(1 << 16)
            except socket.timeout:
                raise _ReadTimeout from None
            h.receive_data(data)

    def _serve_one(self, conn: _Conn) -> bool:
        """Reads one request, answers it; True when the connection can carry another."""
        deadline = self._clock() + self.read_timeout_s
        h = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD_BYTES)
        if conn.buffered:
            h.receive_data(conn.buffered)
            conn.buffered = b""
        received = 0
        try:
            event = self._recv_event(h, conn, deadline)
            if isinstance(event, h11.ConnectionClosed):
                return False  # an idle keep-alive connection closed by its client
            request: h11.Request = event
            method = request.method.decode("ascii", "replace").upper()
            target = request.target.decode("ascii", "replace")
            length = next((v for k, v in request.headers if k == b"content-length"), None)
            cap = self.max_request_bytes
            if cap and length is not None and int(length) > cap:
                err = resource_exhausted(f"request body of {int(length)} bytes is over the {cap}-byte limit "
                                         "(--max_request_bytes)")
                if int(length) <= cap * _MAX_DRAIN_FACTOR and not h.they_are_waiting_for_100_continue:
                    # Read it anyway (within the deadline) so the client gets our answer, not a reset.
                    self._drain(h, conn, deadline)
                return self._abort(conn, err.message, err.http_status, {"error": err.message})
            if h.they_are_waiting_for_100_continue:
                conn.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            chunks = []
            while True:
                event = self._recv_event(h, conn, deadline)
                if isinstance(event, h11.Data):
                    received += len(event.data)
                    if cap and received > cap:  # chunked bodies declare no length
                        err = resource_exhausted(f"request body is over the {cap}-byte limit (--max_request_bytes)")
                        return self._abort(conn, err.message, err.http_status, {"error": err.message})
                    chunks.append(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    return self._abort(conn, f"client closed the connection after {received} body bytes")
        except _ReadTimeout:
            return self._abort(conn, f"no complete request within {self.read_timeout_s:g}s "
                                     f"({received} body bytes read)", 408)
        except h11.RemoteProtocolError as e:
            return self._abort(conn, f"malformed HTTP request: {e}", 400,
                               {"error": f"Malformed request: {e}"})
        except (ConnectionError, OSError) as e:
            return self._abort(conn, f"connection error: {type(e).__name__}: {e}")
        status, payload, headers = handle(self.registry, method, target, b"".join(chunks), self.metrics_path)
        keep = self._keep_alive(request)
        data, closed = h.trailing_data
        conn.buffered = data
        try:
            conn.sock.sendall(_response(status, payload, headers, close=not keep))
        except OSError as e:
            return self._abort(conn, f"client went away before the response: {e}")
        return keep and not closed

    @staticmethod
    def _keep_alive(request) -> bool:
        tokens = {t.strip().lower() for k, v in request.headers if k == b"connection" for t in v.split(b",")}
        if request.http_version == b"1.0":
            return b"keep-alive" in tokens
        return b"close" not in tokens

    def _drain(self, h, conn: _Conn, deadline: float) -> None:
        try:
            while not isinstance(self._recv_event(h, conn, deadline), (h11.EndOfMessage, h11.ConnectionClosed)):
                pass
        except (_ReadTimeout, h11.RemoteProtocolError, OSError):
            pass
