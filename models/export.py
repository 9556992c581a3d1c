"""Export: a standalone SavedModel that takes serialized raw tf.Examples.

Every signature takes `examples` (string, [None]: serialized tf.Example of RAW
features), parses them with the raw feature spec, applies the tf.Transform graph
(which is saved inside) and runs the model. Labels, oracle columns and row keys
are not serving inputs. Only stock TensorFlow ops end up in the graph, so the
result runs on stock TensorFlow Serving. Each export also carries the warm-up
requests TF Serving replays at load (`assets.extra/tf_serving_warmup_requests`).
"""

import os
from typing import Dict, Optional, Sequence

import tensorflow as tf

from schemas import contract

NOT_SERVING_INPUTS = set(contract.LABELS) | set(contract.ORACLE_COLUMNS) | {"day", "session_id"}


def serving_feature_spec(tf_transform_output, features=None) -> Dict:
    """Raw features a signature parses: all serving inputs, or only `features`.

    Parsing only a model's own features prunes the transform graph to its slice:
    the outputs no signature needs are never computed.
    """
    spec = dict(tf_transform_output.raw_feature_spec())
    for name in NOT_SERVING_INPUTS:
        spec.pop(name, None)
    if features is not None:
        missing = set(features) - set(spec)
        if missing:
            raise ValueError(f"features {sorted(missing)} are not serving inputs of the raw schema")
        spec = {k: v for k, v in spec.items() if k in set(features)}
    return spec


class ServingModule(tf.Module):
    """Holds the transform layer and the model's variables: what the signatures need, nothing more.

    The Keras model itself is kept out of the object graph, so its optimizer state
    (and anything else it tracks) is not saved; its variables are saved as
    `model_variables`.
    """

    def __init__(self, model, tf_transform_output, features=None):
        super().__init__(name="serving")
        object.__setattr__(self, "model", model)  # untracked on purpose
        self.model_variables = list(model.variables)
        self.tft_layer = tf_transform_output.transform_features_layer()
        self._spec = serving_feature_spec(tf_transform_output, features)

    def transformed(self, examples):
        raw = tf.io.parse_example(examples, self._spec)
        return self.tft_layer(raw)

    def signature(self, output_names: Sequence[str]):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(examples):
            outputs = self.model(self.transformed(examples), training=False)
            return {name: tf.identity(outputs[name], name=name) for name in output_names}

        return serve.get_concrete_function()


def warmup_examples(feature_spec: Dict) -> list:
    """Serialized tf.Examples for warm-up: one with every serving feature set, one with none."""
    full = tf.train.Example()
    for name, spec in sorted(feature_spec.items()):
        feature = full.features.feature[name]
        if spec.dtype == tf.string:
            feature.bytes_list.value.append(b"warmup")
        elif spec.dtype.is_integer:
            feature.int64_list.value.append(0)
        else:
            feature.float_list.value.append(0.0)
    return [full.SerializeToString(), tf.train.Example().SerializeToString()]


def write_warmup_requests(export_dir: str, model_name: str, signatures: Sequence[str], feature_spec: Dict,
                          extra_inputs: Optional[Dict[str, Dict[str, int]]] = None) -> str:
    """assets.extra/tf_serving_warmup_requests: PredictionLogs TF Serving replays at load.

    Replaying them traces and runs every signature before the version takes traffic,
    so the first real request does not pay for it. `extra_inputs`: {signature: {input
    name: width}} of float inputs besides `examples` (zeros in the warm-up).
    """
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    path = os.path.join(export_dir, "assets.extra", "tf_serving_warmup_requests")
    tf.io.gfile.makedirs(os.path.dirname(path))
    examples = warmup_examples(feature_spec)
    with tf.io.TFRecordWriter(path) as writer:
        for signature in signatures:
            for batch in (examples[:1], examples * 4):
                request = predict_pb2.PredictRequest(
                    model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
                )
                request.inputs["examples"].CopyFrom(tf.make_tensor_proto(batch, dtype=tf.string))
                for name, width in (extra_inputs or {}).get(signature, {}).items():
                    request.inputs[name].CopyFrom(tf.make_tensor_proto([[0.0] * width] * len(batch), dtype=tf.float32))
                log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
                writer.write(log.SerializeToString())
    return path


def export_saved_model(model, tf_transform_output, export_dir: str, outputs: Dict[str, Sequence[str]],
                       model_name: str = "", features=None) -> None:
    """Writes the SavedModel with one signature per entry of `outputs` ({signature: output names}).

    `features`: the raw features the model reads (default: every serving input).
    """
    module = ServingModule(model, tf_transform_output, features)
    signatures = {name: module.signature(names) for name, names in outputs.items()}
    tf.saved_model.save(module, export_dir, signatures=signatures)
    write_warmup_requests(export_dir, model_name, list(outputs), serving_feature_spec(tf_transform_output, features))


def save_keras_model(model, directory: str) -> None:
    """Weights + config of a Keras model, so a later Trainer can rebuild it (e.g. SAMD's teacher)."""
    import json

    tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(os.path.join(directory, "config.json"), "w") as f:
        f.write(json.dumps(model.get_config(), indent=1))
    model.save_weights(os.path.join(directory, "weights"))
