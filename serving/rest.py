"""The REST front end: TF Serving's /v1/models API on the standard library's HTTP server.

    GET  /v1/models/<name>[/versions/<v>|/labels/<l>]            model status
    GET  /v1/models/<name>[/versions/<v>|/labels/<l>]/metadata   signature metadata
    POST /v1/models/<name>[/versions/<v>|/labels/<l>]:predict    {"instances": [...]} or {"inputs": ...}

JSON bodies and errors ({"error": "..."} with TF Serving's HTTP status) follow
TF Serving's REST API; binary strings travel as {"b64": "..."}. The version that
answered a predict is also sent in an `X-Model-Version` header (TF Serving has none).
"""

import base64
import binascii
import json
import logging
import re
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from serving import grpc_service
from serving.config import check_model_name
from serving.errors import ServingError, invalid, not_found
from serving.servable import DEFAULT_SIGNATURE, Signature, check_input_names
from serving.versions import ModelRegistry

log = logging.getLogger("serving")

_MODEL = r"/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
_GET = re.compile(_MODEL + r"(?P<metadata>/metadata)?/?")
_POST = re.compile(_MODEL + r":(?P<verb>[A-Za-z]+)")

# A body this much over the cap is not read at all; the connection is simply closed.
_MAX_DRAIN_FACTOR = 4


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
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError) as e:
            raise invalid(f"input {name!r}: {{\"b64\": ...}} is not valid base64: {e}") from e
    raise invalid(f"input {name!r} expects strings or {{\"b64\": ...}} objects, got {json.dumps(value)[:80]}")


def json_to_array(value, spec: tf.TensorSpec, name: str) -> np.ndarray:
    """A JSON value as an array of the signature's dtype; anything else names the input."""
    dims = _dims(value)
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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "keep-samd-serving"
    server: "RestServer"

    def log_message(self, fmt, *args):  # quiet by default; requests are many
        log.debug("rest %s - " + fmt, self.address_string(), *args)

    def _send(self, status: int, payload: dict, headers: Optional[dict] = None, close: bool = False):
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _error(self, err: ServingError, close: bool = False):
        self._send(err.http_status, {"error": err.message}, close=close)

    def _target(self, match) -> Tuple[str, Optional[int], Optional[str]]:
        name = check_model_name(urllib.parse.unquote(match["name"]))
        version = match["version"]
        if version is not None:
            if not version.isdigit():
                raise invalid(f"version {version!r} in the URL is not an integer")
            version = int(version)
        label = urllib.parse.unquote(match["label"]) if match["label"] else None
        return name, version, label

    def do_GET(self):
        try:
            path = urllib.parse.urlsplit(self.path).path
            match = _GET.fullmatch(path)
            if not match:
                raise not_found(f"Malformed request: GET {path}")
            name, version, label = self._target(match)
            registry = self.server.registry
            if match["metadata"]:
                request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
            else:
                request = get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.name = name
            if version is not None:
                request.model_spec.version.value = version
            elif label:
                request.model_spec.version_label = label
            if match["metadata"]:
                response = grpc_service.model_metadata(registry, request)
                sdm = get_model_metadata_pb2.SignatureDefMap()
                response.metadata["signature_def"].Unpack(sdm)
                payload = {"model_spec": _proto_json(response.model_spec),
                           "metadata": {"signature_def": _proto_json(sdm)}}
            else:
                payload = _proto_json(grpc_service.model_status(registry, request))
            self._send(200, payload)
        except ServingError as e:
            self._error(e)
        except Exception as e:  # noqa: BLE001 - keep serving
            log.exception("REST GET %s failed", self.path)
            self._error(ServingError(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}"))

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "request needs a Content-Length header")
        length = int(length)
        cap = self.server.max_request_bytes
        if cap and length > cap:
            err = ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"request body of {length} bytes is over the {cap}-byte limit "
                               "(--max_request_bytes)")
            if length <= cap * _MAX_DRAIN_FACTOR:
                # Read it anyway so the client gets our answer instead of a reset connection.
                remaining = length
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 1 << 20))
                    if not chunk:
                        break
                    remaining -= len(chunk)
            raise err
        return self.rfile.read(length)

    def do_POST(self):
        try:
            body_bytes = self._read_body()
        except ServingError as e:
            # The body may be unread: this connection cannot carry another request.
            self._error(e, close=True)
            return
        try:
            path = urllib.parse.urlsplit(self.path).path
            match = _POST.fullmatch(path)
            if not match:
                raise not_found(f"Malformed request: POST {path}")
            if match["verb"] != "predict":
                raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                                   f"{match['verb']!r} is not supported; this server implements :predict")
            name, version, label = self._target(match)
            try:
                body = json.loads(body_bytes)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise invalid(f"JSON parse error: {e}") from e
            if not isinstance(body, dict):
                raise invalid("request body must be a JSON object")
            servable = self.server.registry.resolve(name, version, label)
            signature = body.get("signature_name") or DEFAULT_SIGNATURE
            if not isinstance(signature, str):
                raise invalid("'signature_name' must be a string")
            sig = servable.signature(signature)
            inputs, row_format = parse_predict_body(body, sig)
            outputs = servable.predict(signature, inputs)
            self._send(200, format_predict(outputs, row_format),
                       headers={"X-Model-Version": str(servable.version)})
        except ServingError as e:
            self._error(e)
        except Exception as e:  # noqa: BLE001 - keep serving
            log.exception("REST POST %s failed", self.path)
            self._error(ServingError(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}"))


class RestServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: Tuple[str, int], registry: ModelRegistry, max_request_bytes: int):
        self.registry = registry
        self.max_request_bytes = max_request_bytes
        super().__init__(address, _Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

