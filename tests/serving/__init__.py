"""Helpers shared by the serving tests: tiny SavedModels built on the fly, examples, layouts.

The models mimic the exported KEEP model's interface (one `examples` input of
serialized tf.Examples; `serving_default` -> click/conversion/cart of shape [None],
`knowledge` -> [None, K]) at a fraction of the size. They are built once per test
process and copied into each test's own base path.
"""

import atexit
import os
import shutil
import tempfile
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

K = 4
TASKS = ("click", "conversion", "cart")
_BUILT: Dict[tuple, str] = {}
_LOADED: Dict[str, object] = {}
_ROOT: Optional[str] = None


class _Tiny(tf.Module):
    def __init__(self, bias: float, py_function: bool):
        super().__init__()
        self.w = tf.Variable([[0.02, -0.01, 0.03], [0.10, 0.05, -0.08], [0.5, -0.4, 0.1]])
        self.b = tf.Variable([bias, bias - 0.5, bias + 0.5])
        self.k = tf.Variable(tf.reshape(tf.range(3 * K, dtype=tf.float32) / 10.0 - 0.5, [3, K]))
        self._py_function = py_function

    def _x(self, examples):
        f = tf.io.parse_example(examples, {
            "item_price": tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
            "hour": tf.io.FixedLenFeature([], tf.int64, default_value=0),
            "scenario_id": tf.io.FixedLenFeature([], tf.string, default_value=""),
        })
        x = tf.stack([f["item_price"], tf.cast(f["hour"], tf.float32),
                      tf.cast(tf.equal(f["scenario_id"], "banner"), tf.float32)], axis=1)
        if self._py_function:
            x = tf.py_function(lambda t: t * 1.0, [x], tf.float32)
            x.set_shape([None, 3])
        return x

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, examples):
        logits = tf.matmul(self._x(examples), self.w) + self.b
        return {task: tf.sigmoid(logits[:, i]) for i, task in enumerate(TASKS)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def knowledge(self, examples):
        return {"knowledge": tf.tanh(tf.matmul(self._x(examples), self.k))}


VOCAB = [f"w{i}" for i in range(20)] + ["banner"] + [f"w{i}" for i in range(21, 39)] + ["feed"]


class _Vocab(tf.Module):
    """scenario_id -> its line in assets/vocab.txt (+ bias); -1 when absent, so a
    truncated vocabulary changes the predictions of every "banner"/"feed" row."""

    def __init__(self, vocab_path: str, bias: float):
        super().__init__()
        self.table = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
            vocab_path, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
            tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER), default_value=-1)
        self.bias = tf.Variable(bias)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, examples):
        f = tf.io.parse_example(examples, {
            "scenario_id": tf.io.FixedLenFeature([], tf.string, default_value="")})
        return {"index": tf.cast(self.table.lookup(f["scenario_id"]), tf.float32) + self.bias}


def vocab_model(bias: float = 0.0) -> str:
    """Path of a SavedModel with an asset (assets/vocab.txt); built once, read-only."""
    key = ("vocab", bias)
    if key not in _BUILT:
        src = os.path.join(_root(), f"vocab-src-{len(_BUILT)}")
        os.makedirs(src)
        with open(os.path.join(src, "vocab.txt"), "w") as f:
            f.write("\n".join(VOCAB) + "\n")
        path = os.path.join(_root(), f"model-{len(_BUILT)}")
        module = _Vocab(os.path.join(src, "vocab.txt"), bias)
        tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
        _BUILT[key] = path
    return _BUILT[key]


class _HalfPlusTwo(tf.Module):
    """TF Serving's own test model (servables/tensorflow/testdata/saved_model_half_plus_two.py),
    rebuilt here: y = 0.5 x + 2 behind predict, classify and regress signatures."""

    def __init__(self):
        super().__init__()
        self.a, self.b = tf.Variable(0.5), tf.Variable(2.0)

    def _y(self, serialized):
        x = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]
        return self.a * x + self.b

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def predict(self, x):
        return {"y": self.a * x + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(self, inputs):
        return {"scores": self._y(inputs)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(self, inputs):
        return {"outputs": self._y(inputs)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify_labels(self, inputs):
        y = self._y(inputs)
        return {"classes": tf.tile(tf.constant([["lo", "hi"]]), [tf.shape(y)[0], 1]),
                "scores": tf.concat([1.0 - y / 10.0, y / 10.0], axis=1)}


def half_plus_two(root: str, tf1: bool = False, version_dir: str = "00000123") -> str:
    """<root>/<version_dir>/ (zero-padded, as TF Serving's test models): half plus two, TF2
    (tf.saved_model.save) or TF1 style (a graph and SavedModelBuilder, as TF Serving's own)."""
    path = os.path.join(root, version_dir)
    if not tf1:
        module = _HalfPlusTwo()
        tf.saved_model.save(module, path, signatures={
            "serving_default": module.predict, "classify_x_to_y": module.classify,
            "regress_x_to_y": module.regress, "classify_labels": module.classify_labels})
        return path
    sig = tf.compat.v1.saved_model.signature_def_utils.build_signature_def
    info = tf.compat.v1.saved_model.utils.build_tensor_info
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session:
        a, b = tf.compat.v1.Variable(0.5, name="a"), tf.compat.v1.Variable(2.0, name="b")
        serialized = tf.compat.v1.placeholder(tf.string, [None], name="tf_example")
        x = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]
        y = tf.add(a * x, b, name="y")
        x2 = tf.compat.v1.placeholder(tf.float32, [None, 1], name="x")
        y2 = tf.add(a * x2, b, name="y2")
        session.run(tf.compat.v1.global_variables_initializer())
        builder = tf.compat.v1.saved_model.Builder(path)
        builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={
            "serving_default": sig({"x": info(x2)}, {"y": info(y2)}, "tensorflow/serving/predict"),
            "classify_x_to_y": sig({"inputs": info(serialized)}, {"scores": info(y)}, "tensorflow/serving/classify"),
            "regress_x_to_y": sig({"inputs": info(serialized)}, {"outputs": info(y)}, "tensorflow/serving/regress")})
        builder.save()
    return path


def half_plus_two_tflite(root: str, sigdef: bool = False, version_dir: str = "00000123") -> str:
    """<root>/<version_dir>/model.tflite: y = 0.5 x + 2 on x [1, 1], as TF Serving's
    saved_model_half_plus_two_tflite; `sigdef`: with a SignatureDef mapping "x" to its
    input tensor, stored as TF Serving's _with_sigdef model stores it (tflite's
    "signature_defs_metadata": a flexbuffer map of serialized SignatureDefs)."""
    from flatbuffers import flexbuffers
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    module = _HalfPlusTwo()
    fn = tf.function(lambda t: {"y": module.a * t + module.b},
                     input_signature=[tf.TensorSpec([1, 1], tf.float32, name="tflite_input" if sigdef else "x")])
    model = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], module).convert()
    os.makedirs(os.path.join(root, version_dir))
    path = os.path.join(root, version_dir, "model.tflite")
    with open(path, "wb") as f:
        f.write(model)
    parsed = flatbuffer_utils.read_model(path)
    parsed.signatureDefs = []  # TF Serving reads only its own SignatureDefs
    if sigdef:
        interpreter = tf.lite.Interpreter(model_path=path)
        sdef = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
        sdef.inputs["x"].name = interpreter.get_input_details()[0]["name"]
        sdef.outputs["y"].name = interpreter.get_output_details()[0]["name"]
        blob = flexbuffers.Builder()
        with blob.Map():
            blob.Key("serving_default")
            blob.String(sdef.SerializeToString().decode("latin-1"))
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(bytes(blob.Finish()), np.uint8)
        parsed.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = "signature_defs_metadata", len(parsed.buffers) - 1
        parsed.metadata = (parsed.metadata or []) + [entry]
    flatbuffer_utils.write_model(parsed, path)
    return path


def call_saved_model(path: str, serialized: List[bytes]) -> Dict[str, np.ndarray]:
    """serving_default of the SavedModel at `path`, in this process (not cached: files may change)."""
    out = tf.saved_model.load(path).signatures["serving_default"](examples=tf.constant(serialized))
    return {k: v.numpy() for k, v in out.items()}


def _root() -> str:
    global _ROOT
    if _ROOT is None:
        _ROOT = tempfile.mkdtemp(prefix="serving-test-models-")
        atexit.register(shutil.rmtree, _ROOT, True)
    return _ROOT


def saved_model(bias: float = 0.0, py_function: bool = False) -> str:
    """Path of a tiny SavedModel (built once per process; treat as read-only)."""
    key = (bias, py_function)
    if key not in _BUILT:
        path = os.path.join(_root(), f"model-{len(_BUILT)}")
        module = _Tiny(bias, py_function)
        tf.saved_model.save(module, path, signatures={"serving_default": module.serve,
                                                      "knowledge": module.knowledge})
        _BUILT[key] = path
    return _BUILT[key]


def copy_version(src: str, dst: str) -> str:
    """Copies a SavedModel folder like TFX's Pusher: everything else first, saved_model.pb last."""
    shutil.copytree(src, dst, ignore=lambda d, names: ["saved_model.pb"] if d == src else [])
    shutil.copy2(os.path.join(src, "saved_model.pb"), os.path.join(dst, "saved_model.pb"))
    return dst


def make_base(root: str, versions: Dict[int, float], name: str = "m") -> str:
    """<root>/<name>/<version>/ for each {version: bias}; returns the base path."""
    base = os.path.join(root, name)
    os.makedirs(base, exist_ok=True)
    for version, bias in versions.items():
        copy_version(saved_model(bias), os.path.join(base, str(version)))
    return base


def examples(n: int, seed: int = 0) -> List[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ex = tf.train.Example()
        ex.features.feature["item_price"].float_list.value.append(float(rng.uniform(1, 80)))
        ex.features.feature["hour"].int64_list.value.append(int(rng.integers(0, 24)))
        if i % 3:
            ex.features.feature["scenario_id"].bytes_list.value.append(b"banner" if i % 2 else b"feed")
        out.append(ex.SerializeToString())
    return out


def in_process(bias: float, serialized: List[bytes], signature: str = "serving_default") -> Dict[str, np.ndarray]:
    """The same SavedModel called in this process: what a server must return."""
    path = saved_model(bias)
    if path not in _LOADED:
        _LOADED[path] = tf.saved_model.load(path)
    out = _LOADED[path].signatures[signature](examples=tf.constant(serialized, dtype=tf.string))
    return {k: v.numpy() for k, v in out.items()}


def write_warmup(version_dir: str, requests) -> str:
    """assets.extra/tf_serving_warmup_requests holding PredictionLogs for `requests`."""
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(version_dir, "assets.extra", "tf_serving_warmup_requests")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog()
            log.predict_log.request.CopyFrom(request)
            writer.write(log.SerializeToString())
    return path
