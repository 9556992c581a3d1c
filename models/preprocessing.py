"""tf.Transform preprocessing_fn: raw impression features -> model features.

Runs once over the data on Beam (vocabularies, means and variances) and is then
baked into every exported SavedModel, so serving takes raw tf.Examples. Only stock
TensorFlow ops are used (lookup tables, string splits), which TF Serving runs.
See `models/features.py` for the conventions of the outputs.
"""

import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_transform import tf_utils

from models import features as F


def _dense(x, default):
    """A [batch] tensor from a VarLen (sparse) raw feature; `default` where absent."""
    if isinstance(x, tf.sparse.SparseTensor):
        x = tf.sparse.to_dense(
            tf.SparseTensor(x.indices, x.values, [x.dense_shape[0], 1]), default_value=default
        )
    return tf.reshape(x, [-1])


def _ids(x, vocab_filename_tensor):
    """Vocabulary index + 1 (0 = absent), OOV values to the last OOV_BUCKETS indices."""
    idx = tft.apply_vocabulary(
        x, deferred_vocab_filename_tensor=vocab_filename_tensor, num_oov_buckets=F.OOV_BUCKETS
    )
    return tf.where(tf.equal(x, ""), tf.zeros_like(idx), idx + 1)


def _split_sequence(x):
    """Space-separated ids -> [batch, SEQUENCE_LENGTH] strings, most recent first, "" padded."""
    tokens = tf.strings.split(tf.strings.strip(_dense(x, "")))
    return tokens[:, : F.SEQUENCE_LENGTH].to_tensor(default_value="", shape=[None, F.SEQUENCE_LENGTH])


def _count_per_key(keys, vocab_filename):
    """How many rows share each row's key, through a key -> count asset file.

    A file, not graph constants: with millions of users the counts would not fit in a
    GraphDef. Keys must hold no space (the file is space-delimited); ids here do not.
    """
    filename = tft.count_per_key(keys, key_vocabulary_filename=vocab_filename)

    def construct(path):
        init = tf.lookup.TextFileInitializer(path, key_dtype=tf.string, key_index=1, value_dtype=tf.string,
                                             value_index=0, delimiter=" ")
        return tf.lookup.StaticHashTable(init, default_value="0")

    return tf.strings.to_number(_lookup_in_asset_table(construct, filename, keys), tf.float32)


def _lookup_in_asset_table(construct, asset_path, keys):
    """`keys` looked up in the table `construct(asset_path)` builds.

    tft.apply_vocabulary's public lookup_fn would build the table inside the traced
    function; tft's own helper (private module tf_utils) builds it once, outside, and ties
    it to the analyzer that writes the asset. Checked against tensorflow-transform 1.16.0;
    tests/models/test_preprocessing.py fails if it stops working.
    """
    result, _ = tf_utils.construct_and_lookup_table(construct, asset_path, keys)
    return result


def preprocessing_fn(inputs):
    outputs = {}
    sequences = {name: _split_sequence(inputs[name]) for name in F.SEQUENCE_FEATURES}
    vocabularies = {}
    for name in F.CATEGORICAL_FEATURES:
        values = _dense(inputs[name], "")
        # Items and categories also appear in the histories: one vocabulary for both.
        seq = [s for s, target in F.VOCABULARY.items() if target == name and s in sequences]
        corpus = tf.concat([values] + [tf.reshape(sequences[s], [-1]) for s in seq], axis=0)
        corpus = tf.boolean_mask(corpus, tf.not_equal(corpus, ""))
        vocabularies[name] = tft.vocabulary(corpus, vocab_filename=F.VOCABULARY[name])
        outputs[name] = _ids(values, vocabularies[name])
    for name in F.SEQUENCE_FEATURES:
        outputs[name] = _ids(sequences[name], vocabularies[F.VOCABULARY[name]])
    for name in F.INTEGER_CATEGORICAL_FEATURES:
        present = _dense(inputs[name], -1)
        clipped = tf.clip_by_value(present, 0, F.INTEGER_CATEGORICAL_MAX[name])
        outputs[name] = tf.where(present < 0, tf.zeros_like(present), clipped + 1)
    for name in F.NUMERIC_FEATURES:
        x = inputs[name]
        logx = tf.SparseTensor(x.indices, tf.math.log1p(tf.maximum(tf.cast(x.values, tf.float32), 0.0)), x.dense_shape)
        mean, var = tft.mean(logx), tft.var(logx)
        z = (logx.values - mean) / tf.sqrt(tf.maximum(var, 1e-6))
        outputs[name] = _dense(tf.SparseTensor(x.indices, z, x.dense_shape), 0.0)
    for name in F.LABELS:
        outputs[name] = tf.cast(_dense(inputs[name], 0), tf.float32)
    for name in F.ORACLE_COLUMNS:
        if name in inputs:  # absent in real logs; -1 marks "unknown"
            outputs[name] = tf.cast(_dense(inputs[name], -1.0), tf.float32)
    # Per-scenario exposure counts of the user and of the item: PEPNet's domain-side
    # statistics. Counted over the whole input of the transform; at serving they come
    # from the same asset, as a feature store would serve them.
    scenario = _dense(inputs["scenario_id"], "")
    for name, key in (("user_scenario_exposures", "user_id"), ("item_scenario_exposures", "item_id")):
        pair = tf.strings.join([_dense(inputs[key], ""), scenario], separator="|")
        outputs[name] = tft.scale_to_z_score(tf.math.log1p(_count_per_key(pair, name)))
    outputs[F.SESSION_KEY] = tf.strings.to_hash_bucket_fast(_dense(inputs["session_id"], ""), 2**62)
    outputs[F.DAY] = _dense(inputs["day"], 0)
    return outputs
