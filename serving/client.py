"""Client for TF Serving (or serving.model_server): raw rows in, per-task probabilities out.

Reads raw rows (CSV with a header, as in the data contract, or a JSON list of
objects), turns each into a serialized tf.Example the way CsvExampleGen does, sends
them to Predict over gRPC (official stub) or REST, and prints one JSON document.

    python -m serving.client rows.csv --model keep_general --port 8500
    python -m serving.client rows.json --model keep_general --rest --port 8501 --signature knowledge
    python -m serving.client rows.csv --model keep_downstream --plugged   # KEEP's plugged path

A KEEP-plugged model (`--plugged`, `ServingClient.predict_plugged`) is one call: the
client asks the model which knowledge version it was trained with (its
`knowledge_version` signature), fetches K(u, i, c) for the rows' raw ids from that
version of `keep_knowledge`, then predicts with both, on the same model version.
"""

import argparse
import base64
import csv
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import (get_model_metadata_pb2, predict_pb2,  # noqa: E402
                                     prediction_service_pb2_grpc)

# Column types of the raw data contract (schemas/contract.py), copied here on purpose:
# serving must not import the repository's training-side modules. Columns not listed
# are strings. Keep in step with the contract if it gains numeric columns.
INT_COLUMNS = frozenset({"day", "user_age_bucket", "hour", "member_level", "click", "conversion", "cart"})
FLOAT_COLUMNS = frozenset({"item_price", "coupon_amount", "watch_seconds", "p_click", "p_conversion", "p_cart"})

DEFAULT_SIGNATURE = "serving_default"
KNOWLEDGE_VERSION_SIGNATURE = "knowledge_version"  # a KEEP-plugged model's: which cache version it needs
KNOWLEDGE_KEYS = ("user_id", "item_id", "category_id")  # the knowledge cache's inputs
Outputs = Dict[str, np.ndarray]


class PredictError(Exception):
    """A Predict call failed; `code` is the gRPC status name (e.g. "INVALID_ARGUMENT")."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# ---- rows -> tf.Example -------------------------------------------------------------------

def read_rows(path: str) -> List[dict]:
    """Rows of a CSV file with a header, or of a JSON file holding a list of objects."""
    with open(path, newline="") as f:
        text = f.read()
    if path.endswith(".json") or text.lstrip().startswith("["):
        rows = json.loads(text)
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError(f"{path}: JSON input must be a list of objects")
        return rows
    return list(csv.DictReader(text.splitlines()))


def _values(column: str, value) -> Optional[list]:
    if value is None or value == "":
        return None  # an empty cell is an absent feature, as in CsvExampleGen
    values = value if isinstance(value, list) else [value]
    return [v for v in values if v is not None and v != ""] or None


def _feature(column: str, values: list) -> tf.train.Feature:
    try:
        if column in INT_COLUMNS:
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(float(v)) for v in values]))
        if column in FLOAT_COLUMNS:
            return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))
    except (TypeError, ValueError) as e:
        raise ValueError(f"column {column!r}: value {values!r} is not numeric") from e
    # Unlisted columns: JSON numbers keep their JSON type, everything else is bytes.
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))
    return tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values]))


def row_to_example(row: dict) -> tf.train.Example:
    example = tf.train.Example()
    for column, value in row.items():
        values = _values(column, value)
        if values is not None:
            example.features.feature[column].CopyFrom(_feature(column, values))
    return example


def serialize_rows(rows: Iterable[dict]) -> List[bytes]:
    out = []
    for n, row in enumerate(rows):
        try:
            out.append(row_to_example(row).SerializeToString())
        except ValueError as e:
            raise ValueError(f"row {n}: {e}") from e
    return out


def predict_request(serialized: Sequence[bytes], model: str, signature: str = DEFAULT_SIGNATURE,
                    version: Optional[int] = None, label: Optional[str] = None,
                    input_name: str = "examples") -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    elif label:
        request.model_spec.version_label = label
    request.inputs[input_name].CopyFrom(
        tf.make_tensor_proto(list(serialized), dtype=tf.string, shape=[len(serialized)]))
    return request


def _as_array(values) -> np.ndarray:
    """REST's JSON values as an array: numbers as float32, strings as they came."""
    array = np.asarray(values)
    return array.astype(np.float32) if array.dtype.kind in "iuf" else array


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _raw_id(serialized: bytes, name: str) -> bytes:
    """A raw id column of a serialized tf.Example, as the knowledge cache keys it ("" if absent)."""
    feature = tf.train.Example.FromString(serialized).features.feature.get(name)
    if feature is None:
        return b""
    for kind in ("bytes_list", "int64_list"):
        values = getattr(feature, kind).value
        if len(values):
            return values[0] if isinstance(values[0], bytes) else str(values[0]).encode()
    return b""


# ---- transport ----------------------------------------------------------------------------

class ServingClient:
    """Predict over gRPC or REST, retrying UNAVAILABLE with exponential backoff."""

    def __init__(self, host: str = "127.0.0.1", port: Optional[int] = None, rest: bool = False,
                 timeout: float = 10.0, retries: int = 3, backoff_s: float = 0.2):
        self.rest = rest
        self.port = port or (8501 if rest else 8500)
        self.target = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff_s = backoff_s
        self._channel = None
        self._stub = None
        self._output_names: Dict[Tuple[str, str], List[str]] = {}

    def close(self):
        if self._channel is not None:
            self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def stub(self) -> prediction_service_pb2_grpc.PredictionServiceStub:
        if self._stub is None:
            self._channel = grpc.insecure_channel(self.target, options=[("grpc.max_receive_message_length", -1),
                                                                       ("grpc.max_send_message_length", -1)])
            self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        return self._stub

    def _with_retries(self, call):
        for attempt in range(self.retries + 1):
            try:
                return call()
            except PredictError as e:
                if e.code != "UNAVAILABLE" or attempt == self.retries:
                    raise
                time.sleep(self.backoff_s * 2 ** attempt)

    def predict(self, serialized: Sequence[bytes], model: str, signature: str = DEFAULT_SIGNATURE,
                version: Optional[int] = None, label: Optional[str] = None) -> Tuple[Optional[int], Outputs]:
        """(version that answered, {output name: array}) for a batch of serialized tf.Examples."""
        if self.rest:
            return self._with_retries(lambda: self._predict_rest(serialized, model, signature, version, label))
        request = predict_request(serialized, model, signature, version, label)
        return self._with_retries(lambda: self._predict_grpc(request))

    def predict_inputs(self, inputs: Dict[str, np.ndarray], model: str, signature: str = DEFAULT_SIGNATURE,
                       version: Optional[int] = None) -> Tuple[Optional[int], Outputs]:
        """Predict with named input tensors (any dtype, first dimension = batch)."""
        if self.rest:
            body = {"signature_name": signature,
                    "inputs": {k: [{"b64": base64.b64encode(x).decode("ascii")} for x in v]
                               if np.asarray(v).dtype.kind in "SO" else np.asarray(v).tolist()
                               for k, v in inputs.items()}}

            def call():
                payload, headers = self._http(self._url(model, version, None, ":predict"), body)
                served = headers.get("X-Model-Version")
                outputs = payload["outputs"]
                if not isinstance(outputs, dict):
                    outputs = {self._single_output_name(model, signature, version, None)[0]: outputs}
                return (int(served) if served else version), {k: np.asarray(v) for k, v in outputs.items()}

            return self._with_retries(call)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = signature
        if version is not None:
            request.model_spec.version.value = version
        for name, value in inputs.items():
            value = np.asarray(value)
            dtype = tf.string if value.dtype.kind in "SOU" else tf.as_dtype(value.dtype)
            request.inputs[name].CopyFrom(tf.make_tensor_proto(
                value.astype(bytes) if value.dtype.kind == "U" else value, dtype=dtype))
        return self._with_retries(lambda: self._predict_grpc(request))

    def predict_plugged(self, serialized: Sequence[bytes], model: str = "keep_downstream",
                        version: Optional[int] = None) -> Tuple[int, int, Outputs]:
        """A KEEP-plugged model's prediction: (model version, knowledge version, outputs).

        Reads user_id, item_id and category_id from the tf.Examples, fetches their
        knowledge from the `keep_knowledge` version the model was trained with, and
        predicts with the same model version that named it.
        """
        served, names = self.predict(serialized[:1], model, KNOWLEDGE_VERSION_SIGNATURE, version)
        knowledge_version = int(_text(names["knowledge_version"].reshape(-1)[0]))
        knowledge_model = _text(names["knowledge_model"].reshape(-1)[0])
        ids = {k: np.array([_raw_id(s, k) for s in serialized], dtype=object) for k in KNOWLEDGE_KEYS}
        try:
            _, looked_up = self.predict_inputs(ids, knowledge_model, DEFAULT_SIGNATURE, knowledge_version)
        except PredictError as e:
            if e.code == "NOT_FOUND":
                raise PredictError(e.code, f"{model} version {served} was trained with {knowledge_model} version "
                                           f"{knowledge_version}, which the server does not serve (it keeps the "
                                           f"newest 5): retrain or push a newer {model} ({e.message})") from e
            raise
        inputs = {"examples": np.array(list(serialized), dtype=object),
                  "knowledge": looked_up["knowledge"].astype(np.float32)}
        _, outputs = self.predict_inputs(inputs, model, DEFAULT_SIGNATURE, served)
        return served, knowledge_version, outputs

    def _predict_grpc(self, request) -> Tuple[Optional[int], Outputs]:
        try:
            response = self.stub.Predict(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise PredictError(e.code().name, e.details() or "") from e
        version = response.model_spec.version.value if response.model_spec.HasField("version") else None
        return version, {k: output_array(v) for k, v in response.outputs.items()}

    def _url(self, model: str, version: Optional[int], label: Optional[str], suffix: str) -> str:
        path = f"/v1/models/{urllib.parse.quote(model, safe='')}"
        if version is not None:
            path += f"/versions/{version}"
        elif label:
            path += f"/labels/{urllib.parse.quote(label, safe='')}"
        return f"http://{self.target}{path}{suffix}"

    def _http(self, url: str, body: Optional[dict] = None) -> Tuple[dict, dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read()), dict(resp.headers)
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read()).get("error", e.reason)
            except ValueError:
                message = str(e.reason)
            code = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
                    503: "UNAVAILABLE", 501: "UNIMPLEMENTED"}.get(e.code, f"HTTP_{e.code}")
            raise PredictError(code, message) from e
        except (urllib.error.URLError, ConnectionError) as e:
            raise PredictError("UNAVAILABLE", f"{url}: {getattr(e, 'reason', e)}") from e

    def _predict_rest(self, serialized, model, signature, version, label) -> Tuple[Optional[int], Outputs]:
        body = {"signature_name": signature,
                "instances": [{"b64": base64.b64encode(s).decode("ascii")} for s in serialized]}
        payload, headers = self._http(self._url(model, version, label, ":predict"), body)
        predictions = payload["predictions"]
        served = headers.get("X-Model-Version")
        served = int(served) if served else version
        if predictions and isinstance(predictions[0], dict):
            names = list(predictions[0])
        else:
            # One output: TF Serving drops its name, so ask the metadata for it.
            names = self._single_output_name(model, signature, version, label)
            predictions = [{names[0]: p} for p in predictions]
        return served, {k: _as_array([p[k] for p in predictions]) for k in names}

    def _single_output_name(self, model, signature, version, label) -> List[str]:
        key = (model, signature)
        if key not in self._output_names:
            meta, _ = self._http(self._url(model, version, label, "/metadata"))
            outputs = meta["metadata"]["signature_def"]["signature_def"][signature]["outputs"]
            self._output_names[key] = list(outputs)
        return self._output_names[key]


def output_array(proto) -> np.ndarray:
    """tf.make_ndarray of a response tensor, read in one step when its values are a full float_val (what
    TF Serving's Predict writes; make_ndarray walks them twice as slowly)."""
    shape = [d.size for d in proto.tensor_shape.dim]
    if proto.dtype == tf.float32.as_datatype_enum and not proto.tensor_content and \
            len(proto.float_val) == int(np.prod(shape)):
        return np.array(proto.float_val, dtype=np.float32).reshape(shape)
    return tf.make_ndarray(proto)


def model_metadata(host: str, port: int, model: str, timeout: float = 10.0
                   ) -> get_model_metadata_pb2.SignatureDefMap:
    """The model's signatures over gRPC (handy for checking what a server serves)."""
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = model
        response = stub.GetModelMetadata(request, timeout=timeout)
    result = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(result)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rows", help="CSV file with a header, or a JSON list of objects")
    p.add_argument("--model", default="keep_general")
    p.add_argument("--version", type=int)
    p.add_argument("--label", help="version label (instead of --version)")
    p.add_argument("--signature", default=DEFAULT_SIGNATURE)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, help="default 8500 (gRPC) or 8501 (--rest)")
    p.add_argument("--rest", action="store_true", help="use the REST API instead of gRPC")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    p.add_argument("--retries", type=int, default=3, help="retries on UNAVAILABLE, with backoff")
    p.add_argument("--batch_size", type=int, default=256, help="rows per request")
    p.add_argument("--max_rows", type=int, default=0, help="only the first N rows (0: all)")
    p.add_argument("--plugged", action="store_true",
                   help="a KEEP-plugged model: fetch its knowledge from keep_knowledge first")
    a = p.parse_args(argv)
    if a.version is not None and a.label:
        p.error("give --version or --label, not both")

    try:
        rows = read_rows(a.rows)
        if a.max_rows:
            rows = rows[:a.max_rows]
        serialized = serialize_rows(rows)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    predictions, versions = [], set()
    with ServingClient(a.host, a.port, rest=a.rest, timeout=a.timeout, retries=a.retries) as client:
        for start in range(0, len(serialized), max(1, a.batch_size)):
            chunk = serialized[start:start + a.batch_size]
            try:
                if a.plugged:
                    version, _, outputs = client.predict_plugged(chunk, a.model, a.version)
                else:
                    version, outputs = client.predict(chunk, a.model, a.signature, a.version, a.label)
            except PredictError as e:
                print(f"error: rows {start}-{start + len(chunk) - 1}: {e}", file=sys.stderr)
                return 1
            versions.add(version)
            for i in range(len(chunk)):
                row = {"row": start + i}
                row.update({k: _short_floats(v[i]) for k, v in sorted(outputs.items())})
                predictions.append(row)
    header = {"model": a.model, "signature": a.signature,
              "version": versions.pop() if len(versions) == 1 else sorted(versions, key=str)}
    # One prediction per line: readable, and still one JSON document.
    rows = ",\n  ".join(json.dumps(p) for p in predictions)
    print(json.dumps(header)[:-1] + f', "predictions": [\n  {rows}\n]}}')
    return 0


def _short_floats(value: np.ndarray):
    """float32 values as their shortest decimal form (0.1, not 0.10000000149011612)."""
    if value.dtype.kind != "f":
        return value.tolist()
    return np.vectorize(lambda x: float(str(np.float32(x))), otypes=[float])(value).tolist() if value.ndim \
        else float(str(np.float32(value)))


if __name__ == "__main__":
    sys.exit(main())
