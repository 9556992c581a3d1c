import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from models.adl import (ADLConfig, AdlModel, DistributionRouting, MultiDistributionDense, MultiDistributionMLP,
                        UnitGaussian, routing_report)

B, L = 8, 5
VOCAB = {"user_id": 30, "item_id": 40, "category_id": 12, "shop_id": 9, "scenario_id": 10, "user_gender": 5,
         "user_age_bucket": 8, "hour": 25}
SMALL = dict(bottom_units=(16, 8), tower_units=(8,), embedding_dim=4, num_clusters=3)


def batch(seed=0):
    rng = np.random.default_rng(seed)
    f = {name: tf.constant(rng.integers(1, size, B), tf.int64) for name, size in VOCAB.items()}
    hist = rng.integers(1, 40, (B, L))
    hist[:, 3:] = 0  # padding
    hist[-1] = 0  # an empty history
    f["hist_item_ids"] = tf.constant(hist, tf.int64)
    f["hist_category_ids"] = tf.constant(np.where(hist > 0, hist % 11 + 1, 0), tf.int64)
    f["item_price"] = tf.constant(rng.normal(size=B), tf.float32)
    for name in ("user_scenario_exposures", "item_scenario_exposures"):  # the domain statistics
        f[name] = tf.constant(rng.normal(size=B), tf.float32)
    f["click"] = tf.constant([1, 0, 1, 0, 1, 0, 0, 1], tf.float32)
    f["conversion"] = tf.constant([1, 0, 0, 0, 0, 0, 0, 1], tf.float32)
    f["cart"] = tf.constant([0, 0, 1, 0, 1, 0, 0, 0], tf.float32)
    return f


def model_of(**overrides):
    model = AdlModel(ADLConfig(**{**SMALL, **overrides}), VOCAB)
    model(batch())  # builds every weight, centres included
    return model


def centres(model):
    return model.routing.centres.numpy().copy()


def test_centres_are_unit_norm_non_trainable_state_that_moves_only_in_training():
    tf.random.set_seed(0)
    model = model_of(learning_rate=0.01)
    model.compile(optimizer=tf_keras.optimizers.Adam(0.01))
    c = model.routing.centres
    assert not c.trainable
    assert all(v is not c for v in model.trainable_variables)
    assert any(v is c for v in model.non_trainable_variables)
    np.testing.assert_allclose(np.linalg.norm(centres(model), axis=1), 1.0, atol=1e-5)

    # Inference: the centres are frozen, and the same input gives the same output.
    before = centres(model)
    data = batch(1)
    first, second = model(data, training=False), model(data)
    for key in first:
        np.testing.assert_array_equal(first[key].numpy(), second[key].numpy())
    model.test_step(data)
    np.testing.assert_array_equal(centres(model), before)

    # Training steps move them, and they stay unit-norm.
    for seed in range(3):
        model.train_step(batch(seed))
        after = centres(model)
        assert not np.allclose(after, before)
        np.testing.assert_allclose(np.linalg.norm(after, axis=1), 1.0, atol=1e-5)
        before = after


def test_one_training_call_follows_algorithm_1():
    rng = np.random.default_rng(3)
    e = rng.normal(size=(10, 6)).astype(np.float32)
    routing = DistributionRouting(num_clusters=3, iterations=2, beta=0.9, temperature=0.5, seed=7)
    routing.build(e.shape)
    c0 = routing.centres.numpy().copy()
    r = routing(tf.constant(e), training=True).numpy()

    def norm(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    def softmax(s):
        s = np.exp(s - s.max(axis=1, keepdims=True))
        return s / s.sum(axis=1, keepdims=True)

    en = norm(e)
    # The samples are routed by the inherited centres (line 1), as serving routes them.
    np.testing.assert_allclose(r, softmax(en @ c0.T / 0.5), rtol=1e-4, atol=1e-6)
    c = c0
    for _ in range(2):
        c = norm(softmax(en @ c.T / 0.5).T @ en)  # lines 3-5
    np.testing.assert_allclose(routing.centres.numpy(), norm(0.9 * c0 + 0.1 * c), rtol=1e-4, atol=1e-6)  # line 7
    share = np.bincount(r.argmax(1), minlength=3) / 10
    np.testing.assert_allclose(routing.shares.numpy(), 0.9 / 3 + 0.1 * share, rtol=1e-5)
    # Inference: one softmax over the stored centres.
    stored = routing.centres.numpy()
    np.testing.assert_allclose(routing(tf.constant(e)).numpy(), softmax(en @ stored.T / 0.5), rtol=1e-4, atol=1e-6)


def planted(rng, n, dim=8, noise=0.1):
    """n rows of 3 well-separated groups (orthogonal means, small noise) and the group of each row."""
    group = rng.integers(0, 3, n)
    return (np.eye(dim)[group] + noise * rng.normal(size=(n, dim))).astype(np.float32), group


def test_routing_separates_a_planted_mixture_without_duplicate_centres():
    rng = np.random.default_rng(0)
    routing = DistributionRouting(num_clusters=3, seed=0)
    routing.build((None, 8))
    # Three equal centres stay equal under Algorithm 1: only the duplicate rule can split them.
    start = np.tile(np.eye(8)[0] + 0.01 * rng.normal(size=8), (3, 1))
    routing.centres.assign((start / np.linalg.norm(start, axis=1, keepdims=True)).astype(np.float32))
    for _ in range(150):
        routing(tf.constant(planted(rng, 128)[0]), training=True)

    e, group = planted(rng, 600)
    cluster = routing(tf.constant(e)).numpy().argmax(1)
    mapping = [np.bincount(cluster[group == g], minlength=3).argmax() for g in range(3)]
    assert sorted(mapping) == [0, 1, 2]  # three groups, three clusters
    purity = np.mean(cluster == np.array(mapping)[group])
    assert purity > 0.99
    c = routing.centres.numpy()
    cos = c @ c.T
    assert cos[~np.eye(3, dtype=bool)].max() < 0.5  # no duplicate centres
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-5)


def test_an_empty_centre_is_reseeded_at_a_sample():
    rng = np.random.default_rng(1)
    e = (np.eye(8)[0] + 0.3 * rng.normal(size=(64, 8))).astype(np.float32)
    unit = e / np.linalg.norm(e, axis=1, keepdims=True)
    away = np.stack([np.eye(8)[0], -np.eye(8)[0]]).astype(np.float32)  # centre 1 wins no sample
    for share, reseeded in ((0.5, False), (0.005, True)):  # 0.9 * 0.005 + 0.1 * 0 < 0.01
        routing = DistributionRouting(num_clusters=2, min_cluster_share=0.01, seed=0)
        routing.build((None, 8))
        routing.centres.assign(away)
        routing.shares.assign([1.0 - share, share])
        routing(tf.constant(e), training=True)
        at_sample = np.abs(unit - routing.centres.numpy()[1]).max(axis=1).min() < 1e-5
        assert at_sample == reseeded
        assert routing.shares.numpy()[1] == pytest.approx(0.5 if reseeded else 0.9 * share)
        assert np.abs(routing.centres.numpy()[0] - unit).max(axis=1).min() > 1e-3  # centre 0 kept


def planted_batch(rng, n, groups=(0, 1, 2)):
    """A model batch of 3 planted groups: a group fixes every scenario-bearing feature, the rest is random."""
    group = rng.choice(groups, n)
    f = {name: tf.constant(rng.integers(1, size, n), tf.int64) for name, size in VOCAB.items()}
    for name in ("scenario_id", "user_gender", "user_age_bucket"):
        f[name] = tf.constant(group + 1, tf.int64)
    hist = rng.integers(0, 40, (n, L))
    f["hist_item_ids"] = tf.constant(hist, tf.int64)
    f["hist_category_ids"] = tf.constant(np.where(hist > 0, hist % 11 + 1, 0), tf.int64)
    f["item_price"] = tf.constant(rng.normal(size=n), tf.float32)
    f["user_scenario_exposures"] = tf.constant(2.0 * (group - 1), tf.float32)
    f["item_scenario_exposures"] = tf.constant(rng.normal(size=n), tf.float32)
    click = rng.random(n) < 0.3
    f["click"] = tf.constant(click, tf.float32)
    f["conversion"] = tf.constant(click & (rng.random(n) < 0.3), tf.float32)
    f["cart"] = tf.constant(click & (rng.random(n) < 0.3), tf.float32)
    return f, group


def test_training_and_serving_route_every_row_alike_after_training():
    tf_keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    model = model_of(num_clusters=3, routing_input="scenario")
    model.compile(optimizer=tf_keras.optimizers.Adam(0.01))
    for _ in range(40):
        model.train_step(planted_batch(rng, 128)[0])

    # The planted groups land in three clusters, one each.
    data, group = planted_batch(rng, 300)
    served = model.cluster_assignment(data).numpy()
    assert sorted(np.unique(served[group == g]).size for g in range(3)) == [1, 1, 1]
    assert np.unique(served).size == 3
    assert routing_report(model, data)["max_centre_cosine"] < 0.9  # no duplicate centres
    # A batch missing a group: batch-fitted centres (Algorithm 1's last iteration) would route
    # some rows elsewhere; the inherited ones route a training row as serving does.
    skewed, _ = planted_batch(rng, 200, groups=(0, 1))
    report = routing_report(model, skewed)
    assert report["batch_fit_agreement"] < 1.0
    assert report["train_serve_agreement"] == 1.0
    served = model.cluster_assignment(skewed).numpy()
    before = centres(model)
    np.testing.assert_array_equal(model(skewed, training=True)["cluster"].numpy(), served)
    assert not np.allclose(centres(model), before)  # the training call did move the centres


def test_routing_report_counts_rows_per_scenario():
    rng = np.random.default_rng(2)
    model = model_of()
    data, group = planted_batch(rng, 90)
    report = routing_report(model, data)
    assert set(report["sizes"]) == {int(g) + 1 for g in np.unique(group)}
    for scenario, sizes in report["sizes"].items():
        assert sum(sizes) == np.sum(group + 1 == scenario) and len(sizes) == 3
    assert sum(report["cluster_sizes"]) == 90
    assert report["train_serve_agreement"] == 1.0
    c = centres(model)
    assert report["max_centre_cosine"] == pytest.approx((c @ c.T)[~np.eye(3, dtype=bool)].max(), abs=1e-6)


def test_no_routing_field_outweighs_another():
    data = batch()
    data["item_price"] = data["item_price"] * 1000.0  # unscaled, it would carry the whole vector
    model = model_of(routing_input="instance")
    e = model.routing_representation(data).numpy()
    d = model.config.embedding_dim
    widths = [1 if n in model.config.numeric_features else d for n in model.config.routing_features()]
    blocks = np.split(e, np.cumsum(widths)[:-1], axis=1)
    norms = np.stack([np.linalg.norm(b, axis=1) for b in blocks], axis=1)  # [B, fields]
    assert np.all(norms <= 1.0 + 1e-5)
    ids = [i for i, n in enumerate(model.config.routing_features()) if n in model.config.id_features]
    np.testing.assert_allclose(norms[:, ids], 1.0, atol=1e-5)  # every id block is a unit block
    price = model.config.routing_features().index("item_price")
    assert np.all(norms[:, price] ** 2 / (norms ** 2).sum(axis=1) < 0.1)


def test_routing_passes_no_gradient():
    rng = np.random.default_rng(0)
    e = tf.Variable(rng.normal(size=(6, 5)).astype(np.float32))
    w = tf.constant(rng.normal(size=(6, 4)).astype(np.float32))
    routing = DistributionRouting(num_clusters=4, seed=1)
    routing.build(e.shape)
    # The same coefficients without stop_gradient do depend on e, so the checks below have teeth.
    with tf.GradientTape() as tape:
        r_ref = tf.nn.softmax(tf.matmul(tf.math.l2_normalize(e, -1), routing.centres, transpose_b=True) / 0.1)
        ref_loss = tf.reduce_sum(r_ref * w)
    ref_grad = tape.gradient(ref_loss, e)
    assert ref_grad is not None and np.abs(ref_grad.numpy()).max() > 0
    for training in (False, True):
        with tf.GradientTape() as tape:
            r = routing(e, training=training)
            loss = tf.reduce_sum(r * w)
        np.testing.assert_allclose(r.numpy().sum(axis=1), 1.0, rtol=1e-5)
        grad = tape.gradient(loss, e)
        assert grad is None or not np.any(grad.numpy())

    # In the model: the coefficients carry no gradient to any embedding.
    model = model_of()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model.distribution_coefficients(batch()) * tf.range(3, dtype=tf.float32))
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is None for g in grads)


def test_unrouted_cluster_gets_exactly_zero_gradient():
    model = model_of()
    data = batch()
    e = tf.math.l2_normalize(model.routing_representation(data), -1).numpy()
    away = np.linalg.svd(e)[2][-1]  # orthogonal to every sample: cosine 0
    # Clusters 0 and 1 are ±e_0, so every sample has a cosine >= 0 with one of them and
    # cluster 2 wins none.
    model.routing.centres.assign(np.stack([e[0], -e[0], away]).astype(np.float32))
    assignment = model.cluster_assignment(data).numpy()
    assert 2 not in assignment and assignment[0] == 0
    np.testing.assert_array_equal(model(data)["cluster"].numpy(), assignment)

    layers = model.bottom.dense + [d for t in model.towers.values() for d in t.dense]
    with tf.GradientTape() as tape:
        loss = model.compute_losses(data, model(data))
    grads = tape.gradient(loss, [v for d in layers for v in (d.cluster_kernel, d.cluster_bias, d.shared_kernel)])
    for i in range(len(layers)):
        g_kernel, g_bias, g_shared = (grads[3 * i + k].numpy() for k in range(3))
        assert not np.any(g_kernel[2]) and not np.any(g_bias[2])  # exactly zero
        assert np.any(g_kernel[0]) and np.any(g_shared)


def test_multi_distribution_dense_uses_the_elementwise_product_kernel():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3)).astype(np.float32)
    cluster = np.array([0, 1, 1, 0, 1])
    dense = MultiDistributionDense(4, num_clusters=2)
    dense.build(x.shape)
    a = np.sqrt(6 / (3 + 4))  # Glorot's bound: W_j is stored times a
    # At the start every cluster is the shared network: W_j = 1.
    np.testing.assert_allclose(dense.cluster_kernel.numpy() / a, 1.0, rtol=1e-6)
    assert np.abs(dense.shared_kernel.numpy()).max() <= a
    ws, wj = rng.normal(size=(3, 4)), rng.normal(size=(2, 3, 4))
    bs, bk = rng.normal(size=4), rng.normal(size=(2, 4))
    dense.set_weights([ws, bs, a * wj, bk])
    expected = np.stack([x[i] @ (ws * wj[c]) + bs + bk[c] for i, c in enumerate(cluster)])  # Eq. 6
    np.testing.assert_allclose(dense(x, tf.constant(cluster)).numpy(), expected, rtol=1e-5, atol=1e-5)
    # The per-cluster path (a list of each cluster's rows) gives the same rows.
    parts = dense([x[cluster == 0], x[cluster == 1]])
    np.testing.assert_allclose(parts[1].numpy(), expected[cluster == 1], rtol=1e-5, atol=1e-5)


def test_user_wise_and_instance_wise_routing_read_different_features():
    data = batch()
    item_changed = dict(data)
    for name in ("item_id", "category_id", "shop_id", "scenario_id", "hour"):
        item_changed[name] = (data[name] % 3) + 1
    item_changed["item_price"] = data["item_price"] + 5.0
    user_changed = dict(data, user_id=(data["user_id"] % 7) + 1, user_gender=(data["user_gender"] % 2) + 1)

    user = model_of(routing_input="user")
    assert user.config.routing_features() == ("user_id", "user_gender", "user_age_bucket", "hist_item_ids",
                                              "hist_category_ids")
    r = user.distribution_coefficients(data).numpy()
    np.testing.assert_array_equal(user.distribution_coefficients(item_changed).numpy(), r)
    assert not np.allclose(user.distribution_coefficients(user_changed).numpy(), r)

    scenario = model_of(routing_input="scenario")
    r = scenario.distribution_coefficients(data).numpy()
    hour_changed = dict(data, hour=(data["hour"] % 5) + 1, item_id=(data["item_id"] % 5) + 1)
    np.testing.assert_array_equal(scenario.distribution_coefficients(hour_changed).numpy(), r)
    assert not np.allclose(scenario.distribution_coefficients(item_changed).numpy(), r)  # the scenario id moved

    instance = model_of(routing_input="instance")
    r = instance.distribution_coefficients(data).numpy()
    assert instance.routing_representation(data).shape[-1] > user.routing_representation(data).shape[-1]
    assert not np.allclose(instance.distribution_coefficients(item_changed).numpy(), r)
    assert not np.allclose(instance.distribution_coefficients(user_changed).numpy(), r)


def test_train_steps_lower_the_loss():
    tf.random.set_seed(0)
    model = model_of(learning_rate=0.05)
    model.compile(optimizer=tf_keras.optimizers.Adam(0.05))
    data = batch()
    first = float(model.compute_losses(data, model(data)))
    for _ in range(10):
        logs = model.train_step(data)
    assert float(model.compute_losses(data, model(data))) < 0.5 * first
    assert set(logs) == {"loss", "auc_click", "auc_conversion", "auc_cart"}
    out = model(data)
    assert set(out) == {"click", "conversion", "cart", "click_logit", "conversion_logit", "cart_logit", "cluster"}
    assert out["cluster"].dtype == tf.int64 and out["click"].shape == (B,)


def test_centres_are_saved_with_the_weights(tmp_path):
    model = model_of()
    model.routing.centres.assign(tf.math.l2_normalize(tf.random.normal(model.routing.centres.shape), -1))
    path = str(tmp_path / "ckpt")
    model.save_weights(path)
    clone = model_of()
    clone.load_weights(path)
    np.testing.assert_array_equal(centres(clone), centres(model))
    np.testing.assert_array_equal(clone.cluster_assignment(batch()).numpy(), model.cluster_assignment(batch()).numpy())
    np.testing.assert_allclose(clone(batch())["click"].numpy(), model(batch())["click"].numpy(), rtol=1e-6)


def test_get_config_round_trips():
    model = model_of(routing_input="user", num_clusters=2)
    clone = AdlModel.from_config(model.get_config())
    assert clone.config == model.config and clone.vocab_sizes == model.vocab_sizes
    routing = DistributionRouting(5, iterations=2, beta=0.8, temperature=0.3, duplicate_cosine=0.9,
                                  min_cluster_share=0.05, seed=4, name="r")
    again = DistributionRouting.from_config(routing.get_config())
    assert (again.num_clusters, again.iterations, again.beta, again.temperature, again.duplicate_cosine,
            again.min_cluster_share, again.seed) == (5, 2, 0.8, 0.3, 0.9, 0.05, 4)
    dense = MultiDistributionDense.from_config(MultiDistributionDense(7, 3, activation="relu").get_config())
    assert (dense.units, dense.num_clusters, dense.activation) == (7, 3, tf_keras.activations.relu)
    mlp = MultiDistributionMLP.from_config(MultiDistributionMLP((4, 1), 3, 0.1, linear_output=True).get_config())
    assert (mlp.units, mlp.num_clusters, mlp.dropout, mlp.linear_output) == ((4, 1), 3, 0.1, True)
    assert UnitGaussian.from_config(UnitGaussian(3).get_config()).seed == 3


def test_config_from_dict_and_validation():
    config = ADLConfig.from_dict({"bottom_units": [8, 4], "routing_input": "user", "num_clusters": 9})
    assert config.bottom_units == (8, 4) and config.num_clusters == 9
    assert ADLConfig().routing_iterations == 3 and ADLConfig().ewma_beta == 0.9 and ADLConfig().num_clusters == 3
    assert ADLConfig().routing_features() == ("scenario_id", "user_gender", "user_age_bucket",
                                              "user_scenario_exposures", "item_scenario_exposures")
    assert ADLConfig().embedding_tables() == ("user_id", "item_id", "category_id", "shop_id", "scenario_id",
                                              "user_gender", "user_age_bucket", "hour")
    with pytest.raises(ValueError, match="unknown ADLConfig field"):
        ADLConfig.from_dict({"clusters": 3})
    with pytest.raises(ValueError, match="routing_input"):
        ADLConfig(routing_input="item")
    with pytest.raises(ValueError, match="user_features"):
        ADLConfig(user_features=("member_level",))
    with pytest.raises(ValueError, match="scenario_features"):
        ADLConfig(routing_input="scenario", scenario_features=())
    with pytest.raises(ValueError, match="min_cluster_share"):
        ADLConfig(num_clusters=4, min_cluster_share=0.25)
