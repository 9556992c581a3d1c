"""One loaded model version: its signatures, input checks, Predict, warmup and metadata.

A Servable is immutable once loaded; the version manager swaps whole Servables in and
out, so a request that picked one keeps a consistent model until it finishes.
"""

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, Optional

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_log_pb2

from serving.batching import Batcher
from serving.errors import ServingError, from_tf_error, invalid
from serving.stats import Stats

log = logging.getLogger("serving")

DEFAULT_SIGNATURE = "serving_default"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # TF Serving's cap on warmup records per version
SERVE_TAG = "serve"  # the MetaGraph TF Serving loads (--saved_model_tags' default)

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
    flat: Optional[Callable] = None  # fn's graph function called on flat tensors, when it has one
    checks: Dict[str, tuple] = field(default_factory=dict)  # input -> (dtype kinds, numpy dtype)


def _input_checks(inputs: Dict[str, tf.TensorSpec]) -> Dict[str, tuple]:
    out = {}
    for name, spec in inputs.items():
        kinds = ("O", "S", "U") if spec.dtype == tf.string else ()
        dtype = None if kinds else np.dtype(spec.dtype.as_numpy_dtype)
        out[name] = (kinds, dtype)
    return out


def _flat_call(fn, inputs: Dict[str, tf.TensorSpec], outputs: Dict[str, tf.TensorSpec]) -> Optional[Callable]:
    """The signature's graph function without the structured-call layer, or None.

    Calling a restored ConcreteFunction with kwargs re-canonicalizes and re-flattens its
    arguments and outputs on every call, a large share of a batch-1 model call in
    Python alone. The arguments were checked against the signature already
    (check_inputs), so the flat call is equivalent: inputs and outputs go in
    nest.flatten order (sorted keys), captured variables last. TF has no public flat
    call: this uses ConcreteFunction._inference_function (an AtomicFunction) and its
    call_flat, checked against TensorFlow 2.16.2; tests/serving/test_servable.py fails if
    they stop working. Without them, or with composite inputs/outputs, the public kwargs
    call is used.
    """
    atomic = getattr(fn, "_inference_function", None)  # noqa: SLF001
    captured = getattr(fn, "captured_inputs", None)
    if atomic is None or captured is None or not hasattr(atomic, "call_flat"):
        return None
    if not all(isinstance(s, tf.TensorSpec) for s in list(inputs.values()) + list(outputs.values())):
        return None
    in_order = tf.nest.flatten({k: k for k in inputs})
    out_order = tf.nest.flatten({k: k for k in outputs})
    captured = list(captured)

    def call(tensors: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        result = atomic.call_flat(*[tensors[k] for k in in_order], *captured)
        return dict(zip(out_order, result))

    return call


def _signature(name: str, fn) -> Signature:
    _, kwargs = fn.structured_input_signature
    outputs = fn.structured_outputs
    if not isinstance(outputs, dict):
        outputs = {"output_0": outputs}
        return Signature(name, fn, dict(kwargs), outputs, checks=_input_checks(dict(kwargs)))
    return Signature(name, fn, dict(kwargs), dict(outputs), _flat_call(fn, dict(kwargs), dict(outputs)),
                     _input_checks(dict(kwargs)))


class SessionModel:
    """A TF1 SavedModel through TensorFlow's session loader, where tf.saved_model.load cannot
    restore it (e.g. TF Serving's saved_model_half_plus_three: "Shape must be rank 1 but is
    rank 0 for ParseExample"). This is how TF Serving itself runs every SavedModel: each
    signature feeds its inputs' tensors by graph name and fetches its outputs'."""

    def __init__(self, path: str):
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            meta = tf.compat.v1.saved_model.loader.load(self.session, [SERVE_TAG], path)
        self.signatures = {name: self._signature(name, sdef) for name, sdef in meta.signature_def.items()
                           if sdef.inputs and sdef.outputs}

    def _signature(self, name: str, sdef) -> Signature:
        def spec(info):
            shape = None if info.tensor_shape.unknown_rank else [d.size if d.size >= 0 else None
                                                                  for d in info.tensor_shape.dim]
            return tf.TensorSpec(shape, tf.as_dtype(info.dtype), name=info.name)

        inputs = {k: spec(v) for k, v in sdef.inputs.items()}
        feeds, fetches = sorted(sdef.inputs), sorted(sdef.outputs)
        # A callable runs in C++ as TF Serving's Session::Run: no Python check of feed shapes.
        options = config_pb2.CallableOptions(feed=[sdef.inputs[k].name for k in feeds],
                                             fetch=[sdef.outputs[k].name for k in fetches])
        run = self.session._make_callable_from_options(options)  # noqa: SLF001 - Session.make_callable's core

        def call(tensors: Dict[str, tf.Tensor]) -> Arrays:
            return dict(zip(fetches, run(*[tensors[k].numpy() for k in feeds])))

        return Signature(name, call, inputs, {k: spec(v) for k, v in sdef.outputs.items()}, call,
                         _input_checks(inputs))

    def close(self) -> None:
        self.session.close()


TFLITE_FILE = "model.tflite"


def tflite_signature_defs(path: str) -> Dict[str, object]:
    """{key: SignatureDef} a TFLite model stores (tflite::GetSignatureDefMap: the flexbuffer map of
    serialized SignatureDefs in its "signature_defs_metadata" metadata), or {} when it has none."""
    from flatbuffers import flexbuffers
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(path)
    for entry in model.metadata or []:
        if entry.name == b"signature_defs_metadata":
            found = flexbuffers.GetRoot(bytes(model.buffers[entry.buffer].data)).AsMap
            return {key.AsKey: meta_graph_pb2.SignatureDef.FromString(
                        bytes(flexbuffers.String(value._Indirect(), value._byte_width).Bytes))  # noqa: SLF001
                    for key, value in zip(found.Keys, found.Values)}
    return {}


class TfLiteModel:
    """A `model.tflite` through tf.lite.Interpreter, as TF Serving's --prefer_tflite_model
    (servables/tensorflow/tflite_session.cc): the model's stored SignatureDefs, else one
    predict signature, `serving_default`, keyed by the tensors' names. Inputs are resized to
    what each request sends; one interpreter, one call at a time."""

    def __init__(self, path: str):
        self._lock = threading.Lock()
        self._shapes: Dict[int, tuple] = {}  # input index -> the shape it is allocated at
        self.interpreter = tf.lite.Interpreter(model_path=path)
        self.interpreter.allocate_tensors()
        details = {d["name"]: d for d in self.interpreter.get_input_details() + self.interpreter.get_output_details()}
        self.signature_defs = tflite_signature_defs(path)
        if not self.signature_defs:
            sdef = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
            for side, listed in (("inputs", self.interpreter.get_input_details()),
                                 ("outputs", self.interpreter.get_output_details())):
                for d in listed:  # keyed by TfToTfLiteLegacyTensorName: the name up to its first ':'
                    info = getattr(sdef, side)[d["name"].split(":", 1)[0]]
                    info.name, info.dtype = d["name"], tf.as_dtype(d["dtype"]).as_datatype_enum
                    for n in d["shape"]:
                        info.tensor_shape.dim.add().size = int(n)
            self.signature_defs = {DEFAULT_SIGNATURE: sdef}

        def tensor(name: str) -> dict:
            # tflite_session.cc FixTfLiteTensorName: "x:0" names the TFLite tensor "x".
            found = details.get(name) or details.get(name.split(":", 1)[0])
            if found is None:
                raise ValueError(f"{path}: the signature names an unknown tensor {name!r}")
            return found

        self.signatures = {}
        for key, sdef in self.signature_defs.items():
            inputs = {k: tensor(v.name) for k, v in sdef.inputs.items()}
            outputs = {k: tensor(v.name) for k, v in sdef.outputs.items()}
            specs = {k: tf.TensorSpec([None] * len(d["shape"]), tf.as_dtype(d["dtype"])) for k, d in inputs.items()}
            call = self._call(inputs, outputs)
            self.signatures[key] = Signature(key, call, specs, {k: tf.TensorSpec(None, tf.as_dtype(d["dtype"]))
                                                                for k, d in outputs.items()}, call, _input_checks(specs))

    def _call(self, inputs: Dict[str, dict], outputs: Dict[str, dict]) -> Callable:
        def call(tensors: Dict[str, tf.Tensor]) -> Arrays:
            with self._lock:
                resized = False
                for key, d in inputs.items():
                    shape = tuple(tensors[key].shape)
                    if self._shapes.get(d["index"], tuple(d["shape"])) != shape:
                        self.interpreter.resize_tensor_input(d["index"], list(shape))
                        self._shapes[d["index"]] = shape
                        resized = True
                if resized:
                    self.interpreter.allocate_tensors()
                for key, d in inputs.items():
                    self.interpreter.set_tensor(d["index"], tensors[key].numpy())
                self.interpreter.invoke()
                return {k: self.interpreter.get_tensor(d["index"]).copy() for k, d in outputs.items()}

        return call

    def close(self) -> None:
        pass


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
    """TF Serving's checks, with messages that name the offending input: names and dtypes.

    Not shapes: TF Serving feeds an input of shape [3] to a signature declared (None, 1)
    and lets the graph decide (half_plus_two answers [2.5, 3.0, 4.5]); an op that cannot
    take the shape fails with TensorFlow's own INVALID_ARGUMENT. Against `sig.checks`,
    worked out once per version: DType calls are Python-heavy, a visible share of a
    batch-1 request.
    """
    if inputs.keys() != sig.inputs.keys():
        check_input_names(sig, inputs)
    for name, arr in inputs.items():
        kinds, dtype = sig.checks[name]
        if not (arr.dtype.kind in kinds if kinds else arr.dtype == dtype):
            spec = sig.inputs[name]
            raise invalid(f"input {name!r} of signature {sig.name!r} expects dtype {spec.dtype.name}, "
                          f"got {arr.dtype.name}")


class Servable:
    """A SavedModel version loaded with tf.saved_model.load."""

    def __init__(self, model_name: str, version: int, path: str,
                 batching: Optional[BatchingOptions] = None, stats: Optional[Stats] = None,
                 prefer_tflite: bool = False):
        self.model_name = model_name
        self.version = version
        self.path = path
        self.stats = stats or Stats()
        self.warmup_requests = 0
        self._batching = batching
        self._batchers: Dict[str, Batcher] = {}
        self._session = None  # a SessionModel or TfLiteModel, when it runs the signatures
        if prefer_tflite and os.path.isfile(os.path.join(path, TFLITE_FILE)):
            self._session = TfLiteModel(os.path.join(path, TFLITE_FILE))
            self._module, self._signature_defs, self.signatures = (None, self._session.signature_defs,
                                                                   self._session.signatures)
        else:
            self._load_saved_model(path)
        if not self.signatures:
            raise ValueError(f"{path}: SavedModel has no signatures to serve")
        if batching is not None:
            # Made up front so batcher creation never races between request threads.
            for name in self.signatures:
                self._batchers[name] = Batcher(
                    lambda arrays, _n=name: self.run(self.signatures[_n], arrays),
                    batching.max_batch_size, batching.timeout_s, batching.num_threads,
                    name=f"{model_name}/{version}/{name}", stats=self.stats)

    def _load_saved_model(self, path: str) -> None:
        self._signature_defs = _signature_defs(path)
        try:
            self._module = tf.saved_model.load(path)
            self.signatures: Dict[str, Signature] = {
                name: _signature(name, fn) for name, fn in self._module.signatures.items()}
        except (ValueError, TypeError, tf.errors.OpError) as e:
            try:
                self._session = SessionModel(path)
            except Exception:  # noqa: BLE001 - neither loader can: the first one's error says why
                raise e from None
            log.info("%s: loaded with TensorFlow's session loader (tf.saved_model.load: %s)", path,
                     str(e).splitlines()[0] if str(e) else type(e).__name__)
            self._module = None
            self.signatures = self._session.signatures

    def __repr__(self):
        return f"Servable({self.model_name!r}, version={self.version})"

    def signature_def(self, name: str):
        """The SavedModel's stored SignatureDef `name` (method, keys, tensor names), or None."""
        return self._signature_defs.get(name)

    def signature(self, name: str) -> Signature:
        sig = self.signatures.get(name or DEFAULT_SIGNATURE)
        if sig is None:
            # servables/tensorflow/predict_util.cc: FAILED_PRECONDITION, this message.
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"Serving signature key \"{name or DEFAULT_SIGNATURE}\" not found.")
        return sig

    def predict(self, signature_name: str, inputs: Arrays,
                output_filter: Iterable[str] = ()) -> Arrays:
        sig = self.signature(signature_name)
        check_inputs(sig, inputs)
        wanted = list(output_filter)
        # predict_util.cc PreProcessPrediction: these checks, codes and messages.
        for n, alias in enumerate(wanted):
            if alias not in sig.outputs:
                raise invalid(f"output tensor alias not found in signature: {alias} Outputs expected to be "
                              f"in the set {{{','.join(sorted(sig.outputs))}}}.")
            if alias in wanted[:n]:
                raise invalid(f"duplicate output tensor alias: {alias}")
        batcher = self._batchers.get(sig.name)
        outputs = batcher.submit(inputs) if batcher else self.run(sig, inputs)
        self.stats.add("predict_requests")
        return {k: outputs[k] for k in wanted} if wanted else outputs

    def run(self, sig: Signature, inputs: Arrays) -> Arrays:
        """Calls the signature; TF runtime errors come back with their own status code."""
        try:
            tensors = {k: tf.constant(v, dtype=sig.inputs[k].dtype) for k, v in inputs.items()}
            out = sig.flat(tensors) if sig.flat is not None else sig.fn(**tensors)
        except tf.errors.OpError as e:
            raise from_tf_error(e, f"signature {sig.name!r} failed on input(s) {sorted(inputs)}") from e
        except (TypeError, ValueError) as e:
            raise invalid(f"signature {sig.name!r} rejected input(s) {sorted(inputs)}: {e}") from e
        return {k: v if isinstance(v, np.ndarray) else v.numpy() for k, v in out.items()}

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
        """The MetaGraph's SignatureDefs as stored, which is what TF Serving's GetModelMetadata returns
        (servables/tensorflow/get_model_metadata_impl.cc): graph tensor names, method names, and TF2's
        `__saved_model_init_op` entry too."""
        result = get_model_metadata_pb2.SignatureDefMap()
        for name, sdef in self._signature_defs.items():
            result.signature_def[name].CopyFrom(sdef)
        return result

    def close(self) -> None:
        for batcher in self._batchers.values():
            batcher.close()
        if self._session is not None:
            self._session.close()


def _signature_defs(path: str):
    """{name: SignatureDef} of the SavedModel's serving MetaGraph (the first, when none is tagged so)."""
    from tensorflow.core.protobuf import saved_model_pb2

    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        graphs = saved_model_pb2.SavedModel.FromString(f.read()).meta_graphs
    served = next((g for g in graphs if SERVE_TAG in g.meta_info_def.tags), graphs[0])
    return dict(served.signature_def)


def request_examples(request: predict_pb2.PredictRequest) -> int:
    """Rows the request declares (largest leading dimension), read from the protos' shapes
    before anything is converted; a scalar input counts as one."""
    n = 1
    for proto in request.inputs.values():
        if proto.tensor_shape.dim:
            n = max(n, proto.tensor_shape.dim[0].size)
    return n


def request_inputs(request: predict_pb2.PredictRequest) -> Arrays:
    """PredictRequest.inputs as numpy arrays; a malformed TensorProto names its input."""
    arrays = {}
    for name, proto in request.inputs.items():
        try:
            arrays[name] = tf.make_ndarray(proto)
        except Exception as e:  # noqa: BLE001 - make_ndarray raises assorted types on bad protos
            raise invalid(f"input {name!r} is not a valid TensorProto: {e}") from e
    return arrays
