import math

import numpy as np
import pytest
import tensorflow as tf

from models import features as F
from models.keep import (KeepConfig, KeepModel, TargetAttention, TaskTower, pairwise_logistic_loss,
                         pointwise_loss)

B, L = 6, 5
VOCAB = {"user_id": 30, "item_id": 40, "category_id": 12, "shop_id": 9, "scenario_id": 10, "user_gender": 5,
         "user_age_bucket": 8, "hour": 25}


def batch(seed=0):
    rng = np.random.default_rng(seed)
    f = {name: tf.constant(rng.integers(1, size, B), tf.int64) for name, size in VOCAB.items()}
    hist = rng.integers(1, 40, (B, L))
    hist[:, 3:] = 0  # padding
    f["hist_item_ids"] = tf.constant(hist, tf.int64)
    f["hist_category_ids"] = tf.constant(np.where(hist > 0, hist % 11 + 1, 0), tf.int64)
    f["item_price"] = tf.constant(rng.normal(size=B), tf.float32)
    f["user_id"] = tf.constant([1, 1, 1, 2, 2, 3], tf.int64)
    f["click"] = tf.constant([1, 0, 1, 0, 1, 0], tf.float32)
    f["conversion"] = tf.constant([1, 0, 0, 0, 0, 0], tf.float32)
    f["cart"] = tf.constant([0, 0, 1, 0, 1, 0], tf.float32)
    f[F.SESSION_KEY] = tf.constant([7, 7, 8, 8, 9, 9], tf.int64)
    return f


def test_target_attention_ignores_padding():
    att = TargetAttention(units=(8, 4))
    rng = np.random.default_rng(1)
    q = tf.constant(rng.normal(size=(2, 6)), tf.float32)
    keys = rng.normal(size=(2, 4, 6)).astype(np.float32)
    mask = tf.constant(np.array([[1, 1, 0, 0], [1, 0, 0, 0]], bool))
    out = att(q, tf.constant(keys), mask)
    keys[:, 2:, :] = 100.0  # change only padded positions
    keys[1, 1, :] = -50.0
    out2 = att(q, tf.constant(keys), mask)
    np.testing.assert_allclose(out.numpy(), out2.numpy(), rtol=1e-6)
    keys[0, 0, :] = 3.0  # a real position does matter
    assert not np.allclose(att(q, tf.constant(keys), mask).numpy()[0], out.numpy()[0])
    # A row with no history at all pools to zero.
    empty = att(q, tf.constant(keys), tf.zeros((2, 4), tf.bool))
    np.testing.assert_array_equal(empty.numpy(), 0.0)


def test_pairwise_loss_matches_hand_computation():
    labels = tf.constant([1.0, 0.0, 0.0, 1.0, 0.0])
    logits = tf.constant([2.0, 0.5, -1.0, 0.0, 1.0])
    groups = tf.constant([1, 1, 1, 2, 2])
    # Pairs: (0,1), (0,2) in group 1; (3,4) in group 2.
    expected = np.mean([math.log1p(math.exp(-(2.0 - 0.5))), math.log1p(math.exp(-(2.0 + 1.0))),
                        math.log1p(math.exp(-(0.0 - 1.0)))])
    assert float(pairwise_logistic_loss(labels, logits, groups)) == pytest.approx(expected, rel=1e-6)
    # Population mask: row 2 out -> only (0,1) and (3,4).
    pop = tf.constant([1.0, 1.0, 0.0, 1.0, 1.0])
    expected = np.mean([math.log1p(math.exp(-1.5)), math.log1p(math.exp(1.0))])
    assert float(pairwise_logistic_loss(labels, logits, groups, pop)) == pytest.approx(expected, rel=1e-6)
    # No pair in the batch: zero, not NaN.
    assert float(pairwise_logistic_loss(labels, logits, tf.constant([1, 2, 3, 4, 5]))) == 0.0


def test_pointwise_loss_respects_population():
    labels = tf.constant([1.0, 0.0, 1.0])
    logits = tf.constant([0.0, 0.0, 5.0])
    full = float(pointwise_loss(labels, logits))
    only_first_two = float(pointwise_loss(labels, logits, tf.constant([1.0, 1.0, 0.0])))
    assert only_first_two == pytest.approx(math.log(2.0), rel=1e-6)
    assert full < only_first_two


def test_knowledge_output_has_the_documented_width():
    config = KeepConfig(tower_units=(32, 16), user_embedding_dim=12, embedding_dim=4)
    model = KeepModel(config, VOCAB)
    out = model(batch())
    assert config.knowledge_width() == 12 + 3 * 4 + 3 * 16
    assert out["knowledge"].shape == (B, config.knowledge_width())
    for task in ("click", "conversion", "cart"):
        p = out[task].numpy()
        assert p.shape == (B,) and ((p > 0) & (p < 1)).all()
    # K_u is the user id embedding: rows of the same user share it.
    k = out["knowledge"].numpy()
    np.testing.assert_array_equal(k[0, :12], k[1, :12])
    assert not np.array_equal(k[0, :12], k[3, :12])
    # teacher_layers: the shared bottom then every tower's hidden layers.
    layers = model.teacher_layers(batch())
    assert len(layers) == 1 + 3 * 2 and layers[-1].shape == (B, 16)


def test_train_step_lowers_the_hybrid_loss():
    tf.random.set_seed(0)
    config = KeepConfig(tower_units=(16, 8), learning_rate=0.05, pair_key=F.SESSION_KEY)
    model = KeepModel(config, VOCAB)
    model.compile(optimizer=__import__("tf_keras").optimizers.Adam(config.learning_rate))
    data = batch()
    first = model.compute_losses(data, model(data))
    for _ in range(30):
        logs = model.train_step(data)
    assert float(model.compute_losses(data, model(data))) < 0.5 * float(first)
    assert set(logs) == {"loss", "auc_click", "auc_conversion", "auc_cart"}


def test_layers_round_trip_through_get_config():
    att = TargetAttention(units=(8, 2), name="a")
    assert TargetAttention.from_config(att.get_config()).units == (8, 2)
    tower = TaskTower((4, 3), dropout=0.1)
    again = TaskTower.from_config(tower.get_config())
    assert again.units == (4, 3) and again.dropout == 0.1
    model = KeepModel(KeepConfig(tower_units=(8, 4)), VOCAB)
    clone = KeepModel.from_config(model.get_config())
    assert clone.config == model.config


def test_config_overrides_are_checked():
    assert KeepConfig.from_dict({"tower_units": [8, 4]}).tower_units == (8, 4)
    with pytest.raises(ValueError, match="unknown KeepConfig field"):
        KeepConfig.from_dict({"tower_unit": [8]})
