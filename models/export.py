"""Export: a standalone SavedModel that takes serialized raw tf.Examples.

Every signature takes `examples` (string, [None]: serialized tf.Example of RAW
features), parses them with the raw feature spec, applies the tf.Transform graph
(which is saved inside) and runs the model. Labels, oracle columns and row keys
are not serving inputs. Only stock TensorFlow ops end up in the graph, so the
result runs on stock TensorFlow Serving.
"""

from typing import Dict, Sequence

import tensorflow as tf

from schemas import contract

NOT_SERVING_INPUTS = set(contract.LABELS) | set(contract.ORACLE_COLUMNS) | {"day", "session_id"}


def serving_feature_spec(tf_transform_output) -> Dict:
    spec = dict(tf_transform_output.raw_feature_spec())
    for name in NOT_SERVING_INPUTS:
        spec.pop(name, None)
    return spec


class ServingModule(tf.Module):
    """Holds the model and the transform layer so both are saved and tracked."""

    def __init__(self, model, tf_transform_output):
        super().__init__(name="serving")
        self.model = model
        self.tft_layer = tf_transform_output.transform_features_layer()
        self._spec = serving_feature_spec(tf_transform_output)

    def transformed(self, examples):
        raw = tf.io.parse_example(examples, self._spec)
        return self.tft_layer(raw)

    def signature(self, output_names: Sequence[str]):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(examples):
            outputs = self.model(self.transformed(examples), training=False)
            return {name: tf.identity(outputs[name], name=name) for name in output_names}

        return serve.get_concrete_function()


def export_saved_model(model, tf_transform_output, export_dir: str, outputs: Dict[str, Sequence[str]]) -> None:
    """Writes the SavedModel with one signature per entry of `outputs` ({signature: output names})."""
    module = ServingModule(model, tf_transform_output)
    signatures = {name: module.signature(names) for name, names in outputs.items()}
    tf.saved_model.save(module, export_dir, signatures=signatures)
