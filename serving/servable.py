"""One loaded model version: its signatures, input checks, Predict, warmup and metadata.

A Servable is immutable once loaded; the version manager swaps whole Servables in and
out, so a request that picked one keeps a consistent model until it finishes.
"""

import logging
import os
import time
from dataclasses import dataclass
from typing import Dict, Iterable, Optional

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_log_pb2

from serving.batching import Batcher
from serving.errors import ServingError, from_tf_error, invalid
from serving.stats import Stats

log = logging.getLogger("serving")

DEFAULT_SIGNATURE = "serving_default"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # TF Serving's cap on warmup records per version
PREDICT_METHOD = "tensorflow/serving/predict"

Arrays = Dict[str, np.ndarray]


@dataclass(frozen=True)
class BatchingOptions:
    max_batch_size: int = 64
    timeout_s: float = 0.001
    num_threads: int = 2


@dataclass(frozen=True)
class Signature:
    name: str
    fn: object  # the loaded ConcreteFunction
    inputs: Dict[str, tf.TensorSpec]
    outputs: Dict[str, tf.TensorSpec]


def _signature(name: str, fn) -> Signature:
    _, kwargs = fn.structured_input_signature
    outputs = fn.structured_outputs
    if not isinstance(outputs, dict):
        outputs = {"output_0": outputs}
    return Signature(name, fn, dict(kwargs), dict(outputs))


def check_input_names(sig: Signature, names: Iterable[str]) -> None:
    names = set(names)
    missing = sorted(set(sig.inputs) - names)
    extra = sorted(names - set(sig.inputs))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing input(s) {missing}")
        if extra:
            parts.append(f"unexpected input(s) {extra}")
        raise invalid(f"signature {sig.name!r} expects inputs {sorted(sig.inputs)}: " + ", ".join(parts))


def check_inputs(sig: Signature, inputs: Arrays) -> None:
    """TF Serving's checks, with messages that name the offending input."""
    check_input_names(sig, inputs)
    for name, arr in inputs.items():
        spec = sig.inputs[name]
        if spec.dtype == tf.string:
            ok = arr.dtype.kind in ("O", "S", "U")
        else:
            ok = arr.dtype == spec.dtype.as_numpy_dtype
        if not ok:
            raise invalid(f"input {name!r} of signature {sig.name!r} expects dtype {spec.dtype.name}, "
                          f"got {arr.dtype.name}")
        if not spec.shape.is_compatible_with(arr.shape):
            raise invalid(f"input {name!r} of signature {sig.name!r} expects shape {spec.shape}, "
                          f"got {list(arr.shape)}")


class Servable:
    """A SavedModel version loaded with tf.saved_model.load."""

    def __init__(self, model_name: str, version: int, path: str,
                 batching: Optional[BatchingOptions] = None, stats: Optional[Stats] = None):
        self.model_name = model_name
        self.version = version
        self.path = path
        self.stats = stats or Stats()
        self.warmup_requests = 0
        self._batching = batching
        self._batchers: Dict[str, Batcher] = {}
        self._module = tf.saved_model.load(path)
        self.signatures: Dict[str, Signature] = {
            name: _signature(name, fn) for name, fn in self._module.signatures.items()}
        if not self.signatures:
            raise ValueError(f"{path}: SavedModel has no signatures to serve")
        if batching is not None:
            # Made up front so batcher creation never races between request threads.
            for name in self.signatures:
                self._batchers[name] = Batcher(
                    lambda arrays, _n=name: self.run(self.signatures[_n], arrays),
                    batching.max_batch_size, batching.timeout_s, batching.num_threads,
                    name=f"{model_name}/{version}/{name}", stats=self.stats)

    def __repr__(self):
        return f"Servable({self.model_name!r}, version={self.version})"

    def signature(self, name: str) -> Signature:
        sig = self.signatures.get(name or DEFAULT_SIGNATURE)
        if sig is None:
            raise invalid(f"serving signature name {name or DEFAULT_SIGNATURE!r} not found in model "
                          f"{self.model_name!r} version {self.version} "
                          f"(signatures: {sorted(self.signatures)})")
        return sig

    def predict(self, signature_name: str, inputs: Arrays,
                output_filter: Iterable[str] = ()) -> Arrays:
        sig = self.signature(signature_name)
        check_inputs(sig, inputs)
        wanted = list(output_filter)
        unknown = sorted(set(wanted) - set(sig.outputs))
        if unknown:
            raise invalid(f"output_filter names {unknown} not in signature {sig.name!r} "
                          f"(outputs: {sorted(sig.outputs)})")
        batcher = self._batchers.get(sig.name)
        outputs = batcher.submit(inputs) if batcher else self.run(sig, inputs)
        self.stats.add("predict_requests")
        return {k: outputs[k] for k in wanted} if wanted else outputs

    def run(self, sig: Signature, inputs: Arrays) -> Arrays:
        """Calls the signature; TF runtime errors come back with their own status code."""
        try:
            tensors = {k: tf.constant(v, dtype=sig.inputs[k].dtype) for k, v in inputs.items()}
            out = sig.fn(**tensors)
        except tf.errors.OpError as e:
            raise from_tf_error(e, f"signature {sig.name!r} failed on input(s) {sorted(inputs)}") from e
        except (TypeError, ValueError) as e:
            raise invalid(f"signature {sig.name!r} rejected input(s) {sorted(inputs)}: {e}") from e
        return {k: v.numpy() for k, v in out.items()}

    def warmup(self) -> int:
        """Replays assets.extra/tf_serving_warmup_requests as TF Serving does; returns the count.

        A failing warmup request fails the load, as in TF Serving: a model that cannot
        answer its own recorded requests should not go live.
        """
        path = os.path.join(self.path, WARMUP_FILE)
        if not os.path.isfile(path):
            return 0
        count = 0
        start = time.monotonic()
        for record in tf.data.TFRecordDataset(path):
            if count >= MAX_WARMUP_RECORDS:
                log.warning("%s: more than %d warmup records; the rest are skipped", path, MAX_WARMUP_RECORDS)
                break
            entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            kind = entry.WhichOneof("log_type")
            if kind != "predict_log":
                raise ValueError(f"{path}: warmup record {count} is a {kind}; only predict_log is supported")
            request = entry.predict_log.request
            try:
                self.predict(request.model_spec.signature_name, request_inputs(request),
                             request.output_filter)
            except ServingError as e:
                raise ValueError(f"{path}: warmup record {count} failed: {e}") from e
            count += 1
        self.warmup_requests = count
        self.stats.add("warmup_requests", count)
        log.info("model %s version %d: replayed %d warmup request(s) in %.2fs",
                 self.model_name, self.version, count, time.monotonic() - start)
        return count

    def signature_def_map(self) -> get_model_metadata_pb2.SignatureDefMap:
        """The signatures as TF Serving's GetModelMetadata reports them."""
        result = get_model_metadata_pb2.SignatureDefMap()
        for name, sig in sorted(self.signatures.items()):
            sdef = result.signature_def[name]
            sdef.method_name = PREDICT_METHOD
            for side, specs in (("inputs", sig.inputs), ("outputs", sig.outputs)):
                for key, spec in specs.items():
                    info = getattr(sdef, side)[key]
                    info.name = f"{spec.name or key}:0"
                    info.dtype = spec.dtype.as_datatype_enum
                    info.tensor_shape.CopyFrom(spec.shape.as_proto())
        return result

    def close(self) -> None:
        for batcher in self._batchers.values():
            batcher.close()


def request_inputs(request: predict_pb2.PredictRequest) -> Arrays:
    """PredictRequest.inputs as numpy arrays; a malformed TensorProto names its input."""
    arrays = {}
    for name, proto in request.inputs.items():
        try:
            arrays[name] = tf.make_ndarray(proto)
        except Exception as e:  # noqa: BLE001 - make_ndarray raises assorted types on bad protos
            raise invalid(f"input {name!r} is not a valid TensorProto: {e}") from e
    return arrays
