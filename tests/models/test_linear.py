import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from models import export
from models.linear import LinearConfig, LogisticRegressionModel, cross_hash
from models import registry

VOCAB = {"user_id": 30, "item_id": 40, "category_id": 12, "shop_id": 9, "scenario_id": 10, "user_gender": 5,
         "user_age_bucket": 8}
SMALL = LinearConfig(cross_buckets=2**12)
TASKS = ("click", "conversion", "cart")


def batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    f = {name: tf.constant(rng.integers(0, size, n), tf.int64) for name, size in VOCAB.items()}
    click = rng.integers(0, 2, n).astype(np.float32)
    click[:2] = (1.0, 0.0)
    f["click"] = tf.constant(click)
    f["conversion"] = tf.constant(click * rng.integers(0, 2, n))
    f["cart"] = tf.constant(click * rng.integers(0, 2, n))
    return f


def randomize(model, seed=1):
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign(rng.normal(0, 0.5, v.shape).astype(np.float32))


def test_untrained_model_predicts_sigmoid_of_its_bias_exactly():
    model = LogisticRegressionModel(SMALL, VOCAB)
    f = batch()
    out = model(f)
    for t in TASKS:
        np.testing.assert_array_equal(out[t].numpy(), np.full(8, 0.5, np.float32))
    for t, b in zip(TASKS, (-2.5, 0.3, 1.7)):
        model.linear.bias[t].assign(b)
    out = model(f)
    for t, b in zip(TASKS, (-2.5, 0.3, 1.7)):
        np.testing.assert_array_equal(out[f"{t}_logit"].numpy(), np.full(8, b, np.float32))
        np.testing.assert_array_equal(out[t].numpy(), tf.sigmoid(tf.fill([8], b)).numpy())


def test_a_weight_on_one_cross_bucket_moves_exactly_the_rows_hashing_to_it():
    model = LogisticRegressionModel(SMALL, VOCAB)
    f = batch()
    f["user_id"] = tf.constant([1, 1, 2, 1, 3, 2, 1, 4], tf.int64)
    f["category_id"] = tf.constant([4, 4, 4, 5, 4, 4, 4, 1], tf.int64)  # (1, 4) in rows 0, 1 and 6
    randomize(model)
    before = model(f)
    buckets = cross_hash(f["user_id"], f["category_id"], SMALL.cross_buckets).numpy()
    hit = buckets == buckets[0]
    np.testing.assert_array_equal(hit, [True, True, False, False, False, False, True, False])  # no collision here
    table = model.linear.tables["click/user_id_x_category_id"].embeddings
    table.assign(tf.tensor_scatter_nd_add(table, [[buckets[0], 0]], [0.75]))
    after = model(f)
    np.testing.assert_allclose(after["click_logit"] - before["click_logit"], np.where(hit, 0.75, 0.0), atol=1e-6)
    np.testing.assert_array_equal(after["click_logit"].numpy()[~hit], before["click_logit"].numpy()[~hit])
    for t in ("conversion", "cart"):
        np.testing.assert_array_equal(after[f"{t}_logit"], before[f"{t}_logit"])


def test_cross_hash_is_deterministic_order_sensitive_and_farmhash_of_the_joined_ids():
    a = tf.constant([1, 12, 3, 5, 0], tf.int64)
    b = tf.constant([23, 3, 5, 3, 0], tf.int32)  # dtypes of the two sides may differ
    h = cross_hash(a, b, 2**18).numpy()
    np.testing.assert_array_equal(h, [3402, 147650, 71485, 131129, 16597])  # pinned: exports must keep serving
    np.testing.assert_array_equal(tf.function(cross_hash)(a, b, 2**18).numpy(), h)
    assert h[0] != h[1]  # "1|23" vs "12|3": the separator keeps them apart
    assert h[2] != h[3]  # (3, 5) vs (5, 3)
    for x, y, bucket in zip(a.numpy(), b.numpy(), h):  # the definition: FarmHash64("a|b") mod buckets
        fp = tf.fingerprint(tf.constant([f"{x}|{y}"])).numpy()[0]
        assert int.from_bytes(fp.tobytes(), "little") % 2**18 == bucket
    ids = np.arange(1, 60)
    aa, bb = np.meshgrid(ids, ids)
    off = aa != bb
    swapped_equal = cross_hash(aa[off], bb[off], 2**18).numpy() == cross_hash(bb[off], aa[off], 2**18).numpy()
    assert swapped_equal.sum() <= 1  # 3,422 ordered pairs: at most a chance collision or two
    small = cross_hash(aa, bb, 7).numpy()
    assert small.min() >= 0 and small.max() < 7


def _interaction_data(repeats, seed):
    """Every (user, category) pair `repeats` times; click iff user + category is even: no main effect."""
    rng = np.random.default_rng(seed)
    users, cats = np.meshgrid(np.arange(1, 21), np.arange(1, 7))
    users, cats = np.repeat(users.ravel(), repeats), np.repeat(cats.ravel(), repeats)
    order = rng.permutation(len(users))
    users, cats = users[order], cats[order]
    click = ((users + cats) % 2 == 0).astype(np.float32)
    zeros = np.zeros_like(click)
    return {"user_id": users, "category_id": cats, "click": click, "conversion": zeros, "cart": zeros}


def _click_auc(crosses):
    tf_keras.utils.set_random_seed(3)
    config = LinearConfig(features=("user_id", "category_id"), crosses=crosses, cross_buckets=2**12)
    model = LogisticRegressionModel(config, VOCAB)
    model.compile(optimizer=tf_keras.optimizers.Adam(config.learning_rate))
    step = tf.function(model.train_step, autograph=False)  # what fit runs, without fit's first-call overhead
    for _ in range(6):
        for b in tf.data.Dataset.from_tensor_slices(_interaction_data(10, 0)).batch(200):
            step(b)
    test = _interaction_data(2, 1)
    auc = tf_keras.metrics.AUC()
    auc.update_state(test["click"], model(test)["click"])
    return float(auc.result())


def test_a_user_by_category_cross_learns_what_one_hot_ids_cannot():
    with_cross = _click_auc((("user_id", "category_id"),))
    without = _click_auc(())
    assert with_cross > 0.95, with_cross
    assert without < 0.6, without


def test_l2_is_scikit_learns_uniform_penalty_scaled_to_each_tasks_rows():
    """l2 x the sum of all a task's squared weights, divided for conversion and cart by the batch's share of
    clicked rows: 1/(2 C n_t) in mean-loss form."""
    f = batch(8)
    plain = LogisticRegressionModel(dataclasses.replace(SMALL, l2=0.0), VOCAB)
    model = LogisticRegressionModel(dataclasses.replace(SMALL, l2=0.01), VOCAB)
    model(f), plain(f)
    randomize(model)
    plain.set_weights(model.get_weights())
    share = float(np.mean(f["click"].numpy()))
    assert 0 < share < 1
    squares = {t: sum(float(np.sum(np.square(v.numpy()))) for k, table in model.linear.tables.items()
                      if k.startswith(f"{t}/") for v in [table.embeddings]) for t in ("click", "conversion", "cart")}
    expected = 0.01 * (squares["click"] + (squares["conversion"] + squares["cart"]) / share)
    got = float(model.compute_losses(f, model(f))) - float(plain.compute_losses(f, plain(f)))
    assert got == pytest.approx(expected, rel=1e-4)
    # Every weight is shrunk, also those no row of the batch looks up (unlike the cross-entropy).
    with tf.GradientTape() as tape:
        total = model.compute_losses(f, model(f))
    table = model.linear.tables["click/item_id"].embeddings
    grad = tf.convert_to_tensor(tape.gradient(total, table)).numpy()[:, 0]
    unseen = np.setdiff1d(np.arange(table.shape[0]), f["item_id"].numpy())
    np.testing.assert_allclose(grad[unseen], 2 * 0.01 * table.numpy()[unseen, 0], rtol=1e-4)


def test_conversion_and_cart_ignore_unclicked_rows_in_loss_and_gradients():
    model = LogisticRegressionModel(dataclasses.replace(SMALL, l2=0.0), VOCAB)
    f = batch(8)
    randomize(model)
    clicked = f["click"].numpy() == 1
    loss = float(model.compute_losses(f, model(f)))
    flipped = {**f, **{t: tf.constant(np.where(clicked, f[t], 1 - f[t].numpy())) for t in ("conversion", "cart")}}
    assert float(model.compute_losses(flipped, model(flipped))) == pytest.approx(loss, abs=0)
    changed = {**f, "conversion": tf.constant(np.where(clicked, 1 - f["conversion"].numpy(), f["conversion"]))}
    assert float(model.compute_losses(changed, model(changed))) != pytest.approx(loss, rel=1e-3)
    # Gradient (cross-entropy) of the conversion and cart item weights: zero at items only unclicked rows hold.
    f["item_id"] = tf.constant(np.where(clicked, 1, 2 + np.arange(8)), tf.int64)
    tables = [model.linear.tables[f"{t}/item_id"].embeddings for t in ("conversion", "cart")]
    with tf.GradientTape() as tape:
        total = model.compute_losses(f, model(f))
    for g in tape.gradient(total, tables):
        g = tf.convert_to_tensor(g).numpy()[:, 0]
        assert g[1] != 0 and np.all(g[2:10][~clicked] == 0)
    click_table = model.linear.tables["click/item_id"].embeddings
    with tf.GradientTape() as tape:
        total = model.compute_losses(f, model(f))
    assert np.all(tf.convert_to_tensor(tape.gradient(total, click_table)).numpy()[2:10][~clicked] != 0)


def test_config_round_trips_and_rejects_what_it_cannot_score():
    config = LinearConfig(crosses=(("item_id", "user_gender"),), cross_buckets=64, l2=0.0)
    assert LinearConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(config)))) == config
    assert LinearConfig.from_dict(None) == LinearConfig()
    assert set(LinearConfig().features) == {"user_id", "item_id", "category_id", "shop_id", "scenario_id",
                                            "user_age_bucket", "user_gender"}
    with pytest.raises(ValueError, match="unknown LinearConfig field"):
        LinearConfig.from_dict({"buckets": 3})
    for bad in ({"features": ["hist_item_ids"]}, {"features": ["item_price"]},
                {"crosses": [["user_id", "user_id"]]}, {"crosses": [["user_id", "hour", "day"]]},
                {"features": [], "crosses": []}, {"cross_buckets": 0}):
        with pytest.raises(ValueError):
            LinearConfig.from_dict(bad)
    with pytest.raises(ValueError, match="no vocabulary size"):
        LogisticRegressionModel(LinearConfig(), {"user_id": 3})


def test_keras_save_load_and_config_round_trip_give_identical_outputs(tmp_path):
    model = LogisticRegressionModel(SMALL, VOCAB)
    f = batch()
    model(f)
    randomize(model)
    expected = model(f)
    clone = LogisticRegressionModel.from_config(model.get_config())
    assert clone.config == model.config
    clone(f)
    clone.set_weights(model.get_weights())
    export.save_keras_model(model, str(tmp_path / "weights"))
    rebuilt = LogisticRegressionModel.from_config(json.load(open(tmp_path / "weights" / "config.json")))
    rebuilt(f)
    rebuilt.load_weights(str(tmp_path / "weights" / "weights"))
    model.save(str(tmp_path / "m.keras"))
    loaded = tf_keras.models.load_model(str(tmp_path / "m.keras"))
    assert isinstance(loaded, LogisticRegressionModel) and loaded.config == model.config
    for other in (clone, rebuilt, loaded):
        out = other(f)
        for k in expected:
            np.testing.assert_array_equal(out[k].numpy(), expected[k].numpy())


class _IdsAsRawFeatures:
    """A stand-in TFTransformOutput whose raw features are already the transformed ids."""

    def raw_feature_spec(self):
        return {n: tf.io.FixedLenFeature([], tf.int64, default_value=0) for n in VOCAB}

    def transform_features_layer(self):
        return tf.Module()


def test_exports_through_the_unified_export_and_serves_from_the_saved_graph(tmp_path, monkeypatch):
    model = LogisticRegressionModel(SMALL, VOCAB)
    f = batch()
    model(f)
    randomize(model)
    monkeypatch.setattr(export.ServingModule, "transformed",
                        lambda self, examples: tf.io.parse_example(examples, self._spec))
    export.export_saved_model(model, _IdsAsRawFeatures(), str(tmp_path / "m"),
                              outputs={"serving_default": TASKS}, model_name="logistic_regression")
    examples = []
    for i in range(8):
        e = tf.train.Example()
        for n in VOCAB:
            e.features.feature[n].int64_list.value.append(int(f[n][i]))
        examples.append(e.SerializeToString())
    served = tf.saved_model.load(str(tmp_path / "m")).signatures["serving_default"](examples=tf.constant(examples))
    expected = model(f)
    for t in TASKS:
        np.testing.assert_allclose(served[t].numpy(), expected[t].numpy(), rtol=1e-6)
    assert (tmp_path / "m" / "assets.extra" / "tf_serving_warmup_requests").exists()


def test_the_unified_trainer_builds_it_from_its_registry_entry():
    entry = registry.get("logistic_regression")
    assert (entry.model, entry.config) == ("models.linear.LogisticRegressionModel", "models.linear.LinearConfig")
    model, config = entry.build({"cross_buckets": 128}, {**VOCAB, "hist_item_ids": 40, "pay_channel": 6})
    assert isinstance(model, LogisticRegressionModel) and config == LinearConfig(cross_buckets=128)
    out = model(batch())
    assert {f"{t}{s}" for t in TASKS for s in ("", "_logit")} == set(out)
    per_task = sum(VOCAB.values()) + 3 * 128 + 1
    assert sum(int(np.prod(v.shape)) for v in model.trainable_variables) == 3 * per_task
