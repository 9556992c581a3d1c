"""Transformed examples as in-memory arrays, and the raw ids behind their indices.

The KEEP stage-two trainers (General Knowledge Center, downstream model) need the
raw string ids of every row (the cache is keyed by them) next to the transformed
features. The transform maps an id to its vocabulary position + 1 (0 = absent), and
every id of the data is in the vocabulary (no frequency cut), so the raw id is read
back from the vocabulary file instead of re-running the transform.

The arrays are held in memory: tens of millions of rows per worker at most. Larger
spans need a streaming reader (a tf.data pipeline per part), not this helper. To keep
the peak near what is kept, `columns` parses only the features asked for and `where`
drops rows batch by batch, before the batches are joined.
"""

from typing import Callable, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from models import features as F


def load_transformed(file_pattern: str, tf_transform_output, columns: Optional[Sequence[str]] = None,
                     where: Optional[Callable[[Dict[str, np.ndarray]], np.ndarray]] = None) -> Dict[str, np.ndarray]:
    """{feature: array over rows} of the transformed examples matching `file_pattern`.

    columns: the features to read (default all); where: a batch's {feature: array} -> a
    boolean mask of the rows to keep (it sees `columns` only).
    """
    files = sorted(tf.io.gfile.glob(file_pattern))
    if not files:
        raise FileNotFoundError(f"no transformed examples match {file_pattern}")
    spec = tf_transform_output.transformed_feature_spec()
    if columns is not None:
        missing = sorted(set(columns) - set(spec))
        if missing:
            raise KeyError(f"{file_pattern}: no transformed feature(s) {missing}")
        spec = {k: spec[k] for k in columns}
    parts = {}
    rows = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(8192)
    for batch in rows.map(lambda x: tf.io.parse_example(x, spec)):
        arrays = {k: v.numpy() for k, v in batch.items()}
        if where is not None:
            arrays = select(arrays, where(arrays))
        for k, v in arrays.items():
            parts.setdefault(k, []).append(v)
    if not parts:
        return {k: np.zeros((0,) + tuple(spec[k].shape), spec[k].dtype.as_numpy_dtype) for k in spec}
    return {k: np.concatenate(v) for k, v in parts.items()}


def raw_ids(tf_transform_output, name: str, indices: np.ndarray) -> np.ndarray:
    """Raw string ids of transformed indices of id feature `name` ("" for absent or out-of-vocabulary)."""
    vocab = [v.decode() if isinstance(v, bytes) else str(v)
             for v in tf_transform_output.vocabulary_by_name(F.VOCABULARY[name])]
    reverse = np.array([""] + vocab + [""] * F.OOV_BUCKETS, dtype=object)
    return reverse[np.asarray(indices, np.int64)]


def transformed_index(tf_transform_output, name: str, raw: str) -> int:
    """The transformed index of one raw id (vocabulary position + 1)."""
    vocab = [v.decode() if isinstance(v, bytes) else str(v)
             for v in tf_transform_output.vocabulary_by_name(F.VOCABULARY[name])]
    if raw not in vocab:
        raise ValueError(f"{name} {raw!r} has no rows in the transformed data")
    return vocab.index(raw) + 1


def select(arrays: Dict[str, np.ndarray], mask: np.ndarray) -> Dict[str, np.ndarray]:
    return {k: v[mask] for k, v in arrays.items()}
