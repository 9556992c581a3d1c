import numpy as np
import pytest
import tensorflow as tf

from trainers.unified import CORRUPTIONS, MODELS, build


def _batch():
    return {"click": tf.constant([1.0, 0.0, 1.0, 0.0, 0.0]), "conversion": tf.constant([1.0, 0.0, 0.0, 0.0, 0.0]),
            "cart": tf.constant([0.0, 0.0, 1.0, 0.0, 0.0]), "user_id": tf.constant([1, 2, 3, 4, 5], tf.int64)}


def test_shuffled_labels_move_together_and_keep_the_features():
    tf.random.set_seed(1)
    b = _batch()
    moved = False
    for _ in range(5):
        out = CORRUPTIONS["shuffle"](b)
        np.testing.assert_array_equal(out["user_id"], b["user_id"])
        rows = sorted(zip(*(out[t].numpy().tolist() for t in ("click", "conversion", "cart"))))
        assert rows == sorted(zip(*(b[t].numpy().tolist() for t in ("click", "conversion", "cart"))))
        moved |= not np.array_equal(out["click"], b["click"])
    assert moved


def test_inverted_labels():
    out = CORRUPTIONS["invert"](_batch())
    np.testing.assert_array_equal(out["click"], [0, 1, 0, 1, 1])
    np.testing.assert_array_equal(out["cart"], [1, 1, 0, 1, 1])


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match="unknown unified model 'dcn'"):
        build("dcn", {}, {})
    assert set(MODELS) == {"pepnet", "adl", "grec", "shared_bottom", "mmoe", "logistic_regression"}
