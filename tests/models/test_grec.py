import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from models.grec import (ROUTINGS, TASK_ROUTINGS, FixedExperts, GRecConfig, GRecInput, GRecModel,
                         MultiQueryAttention, ParallelTransformerBlock, SparseMoE, count_expert_flops, count_params,
                         extract_subnetwork)
from models.keep import TASKS

B, L = 6, 5
VOCAB = {"user_id": 30, "item_id": 40, "category_id": 12, "shop_id": 9, "scenario_id": 10, "user_gender": 5,
         "user_age_bucket": 8, "hour": 25}
SMALL = dict(num_experts=4, top_k=2, model_dim=16, head_dim=16, num_heads=4, ff_units=16, expert_units=(16, 8),
             embedding_dim=8, head_units=(16,))


def batch(seed=0, scenarios=None):
    rng = np.random.default_rng(seed)
    f = {name: tf.constant(rng.integers(1, size, B), tf.int64) for name, size in VOCAB.items()}
    if scenarios is not None:
        f["scenario_id"] = tf.constant(scenarios, tf.int64)
    hist = rng.integers(1, 40, (B, L))
    for row, length in enumerate([5, 3, 0, 1, 4, 2]):  # varied padding, one empty history
        hist[row, length:] = 0
    f["hist_item_ids"] = tf.constant(hist, tf.int64)
    f["hist_category_ids"] = tf.constant(np.where(hist > 0, hist % 11 + 1, 0), tf.int64)
    f["item_price"] = tf.constant(rng.normal(size=B), tf.float32)
    for name in ("user_scenario_exposures", "item_scenario_exposures"):  # the domain statistics
        f[name] = tf.constant(rng.normal(size=B), tf.float32)
    f["click"] = tf.constant([1, 0, 1, 0, 1, 0], tf.float32)
    f["conversion"] = tf.constant([1, 0, 0, 0, 0, 0], tf.float32)
    f["cart"] = tf.constant([0, 0, 1, 0, 1, 0], tf.float32)
    return f


def trained(config, data, steps=3):
    """A model a few Adam steps away from its initialisation (non-zero biases, distinct experts)."""
    tf_keras.utils.set_random_seed(0)
    model = GRecModel(config, VOCAB)
    model.compile(optimizer=tf_keras.optimizers.Adam(0.01))
    for _ in range(steps):
        model.train_step(data)
    return model


def test_defaults_follow_the_paper():
    c = GRecConfig()
    assert (c.routing, c.num_experts, c.top_k) == ("task_sentence", 8, 4)
    assert c.load_balance_weight == 0.0 and not c.task_upsampling
    assert c.head_dim == c.model_dim  # Eq. 2: d x d projections
    assert c.sequence_pooling == "mean"  # no target item in the sequence encoding, as in the paper
    model = GRecModel(GRecConfig(**{**SMALL, "num_experts": 8, "top_k": 4}), VOCAB)
    model(batch())
    assert not model.losses  # no auxiliary loss unless asked for


@pytest.mark.parametrize("pooling", ["target", "mean"])
def test_transformer_sees_only_the_behaviour_sequence(pooling):
    tf.random.set_seed(0)
    model = GRecModel(GRecConfig(**SMALL, sequence_pooling=pooling), VOCAB)
    a = batch(0)
    seen = []
    attention = model.encoder.blocks[0].attention
    original = attention.call
    attention.call = lambda x, *args, **kw: (seen.append(x), original(x, *args, **kw))[1]
    out_a = model(a)
    states_a, mask = model.encoder.encode_sequence(a)
    assert states_a.shape == (B, L, 16)  # one token per sequence position, nothing else
    np.testing.assert_array_equal(mask.numpy(), a["hist_item_ids"].numpy() > 0)
    # Every non-sequence feature changes: the transformer's inputs and outputs do not.
    b = dict(batch(1))
    b["hist_item_ids"], b["hist_category_ids"] = a["hist_item_ids"], a["hist_category_ids"]
    out_b = model(b)
    states_b, _ = model.encoder.encode_sequence(b)
    assert len(seen) == 4
    np.testing.assert_array_equal(seen[0].numpy(), seen[2].numpy())  # attention inputs, model(a) vs model(b)
    np.testing.assert_array_equal(states_a.numpy(), states_b.numpy())
    assert not np.allclose(out_a["click"].numpy(), out_b["click"].numpy())  # ... which the model does read
    # A change of the sequence does reach it.
    c = dict(a)
    c["hist_item_ids"] = tf.where(a["hist_item_ids"] > 0, a["hist_item_ids"] % 39 + 1, 0)
    assert not np.allclose(model.encoder.encode_sequence(c)[0].numpy(), states_a.numpy())


def test_target_pooling_reads_the_sequence_with_the_target_item():
    tf.random.set_seed(0)
    enc = GRecInput(VOCAB, ("user_id", "item_id"), (("context", ("item_price",)),),
                    (("hist_item_ids", "item_id"), ("hist_category_ids", "category_id")), embedding_dim=8,
                    model_dim=16, num_heads=2, head_dim=16, ff_units=8, sequence_pooling="target")
    f = batch()
    u = enc(f).numpy()
    assert u.shape == (B, enc.output_dim) and enc.output_dim == 16 + 8 * 3
    states, mask = enc.encode_sequence(f)
    target = tf.concat([enc.embeddings["item_id"](f["item_id"]), enc.embeddings["category_id"](f["category_id"])], -1)
    q = enc.target_query(target).numpy()
    s, m = states.numpy(), mask.numpy()
    for i in range(B):
        if not m[i].any():
            np.testing.assert_allclose(u[i, :16], 0.0)  # empty history
            continue
        logits = s[i][m[i]] @ q[i] / 4.0
        w = np.exp(logits - logits.max())
        np.testing.assert_allclose(u[i, :16], (w / w.sum()) @ s[i][m[i]], atol=1e-5)
    np.testing.assert_allclose(u[:, 16:24], enc.embeddings["user_id"](f["user_id"]).numpy())  # deep, unprojected


def test_top_k_selects_exactly_k_distinct_experts_per_unit():
    f = batch()
    for routing in ROUTINGS:
        for k in (1, 3):
            model = GRecModel(GRecConfig(**{**SMALL, "routing": routing, "top_k": k}), VOCAB)
            (stats,) = model.moe_stats(f)
            experts = stats["experts"].numpy()
            units = B if routing == "token" else B * len(TASKS)  # token: the tasks of a sample share u
            assert experts.shape == (units, k), routing
            assert ((experts >= 0) & (experts < 4)).all()
            assert all(len(set(row)) == k for row in experts), routing
            assert int(tf.reduce_sum(stats["expert_rows"])) == k * units  # sparse: k experts per unit


def test_same_task_sentence_routes_identically_whatever_the_other_features():
    tf.random.set_seed(1)
    model = GRecModel(GRecConfig(**{**SMALL, "num_experts": 8, "top_k": 2}), VOCAB)
    scenarios = [3, 3, 5, 5, 3, 7]
    a, b = batch(0, scenarios), batch(1, scenarios)  # other features (user, item, history) all differ
    ea = model.moe_stats(a)[0]["experts"].numpy().reshape(len(TASKS), B, 2)
    eb = model.moe_stats(b)[0]["experts"].numpy().reshape(len(TASKS), B, 2)
    for t, task in enumerate(TASKS):
        for i in range(B):
            assert set(ea[t, i]) == set(eb[t, i]) == set(model.route(scenarios[i], task)[0])
    # The router runs once per distinct (scenario, task), not per sample.
    assert int(model.moe_stats(a)[0]["router_evaluations"]) == len(set(scenarios)) * len(TASKS)


def test_flops_per_routing():
    f = batch(scenarios=[1, 2, 1, 2, 1, 2])
    counts = {}
    for routing in ROUTINGS:
        model = GRecModel(GRecConfig(**{**SMALL, "routing": routing}), VOCAB)
        counts[routing] = count_expert_flops(model, f)
    width = GRecModel(GRecConfig(**SMALL), VOCAB).encoder.output_dim
    per_row = width * 16 + 16 * 8
    assert counts["token"]["expert_rows"] == 2 * B
    assert counts["token"]["expert_flops"] == 2 * 2 * B * per_row
    for routing in TASK_ROUTINGS:
        assert counts[routing]["expert_rows"] == 2 * B * len(TASKS)
    assert counts["task_sentence"]["router_evaluations"] == 2 * len(TASKS)
    assert counts["task"]["router_evaluations"] == len(TASKS)
    assert counts["task_sentence"]["router_flops"] == 2 * 2 * len(TASKS) * width * 4
    assert counts["token"]["router_evaluations"] == B and counts["sentence"]["router_evaluations"] == B * len(TASKS)
    # With B samples per batch, token routing evaluates B routers, task_sentence one per distinct pair.
    assert counts["task"]["router_flops"] < counts["task_sentence"]["router_flops"] < counts["sentence"]["router_flops"]


def test_sparse_moe_matches_a_dense_reference():
    rng = np.random.default_rng(3)
    n, d, e = 7, 6, 4
    x = tf.constant(rng.normal(size=(n, d)), tf.float32)
    route = tf.constant(rng.normal(size=(n, 3)), tf.float32)
    for r in (None, route):
        moe = SparseMoE(num_experts=e, top_k=2, expert_units=(8, 5))
        stats = []
        y = moe(x, route=r, stats=stats).numpy()
        logits = moe.router(x if r is None else r).numpy()
        dense = np.stack([moe.expert(i, x).numpy() for i in range(e)], 1)  # [n, E, 5]
        top = np.argsort(-logits, -1)[:, :2]
        w = np.exp(np.take_along_axis(logits, top, -1))
        w /= w.sum(-1, keepdims=True)
        expected = (np.take_along_axis(dense, top[..., None], 1) * w[..., None]).sum(1)
        np.testing.assert_allclose(y, expected, atol=1e-5)
        for i in range(e):  # expert i ran on the units that chose it, nothing else
            assert int(stats[0]["expert_rows"][i]) == (stats[0]["experts"].numpy() == i).any(1).sum()


def test_load_balance_loss_on_a_hand_computed_case():
    moe = SparseMoE(num_experts=4, top_k=2, expert_units=(3,), load_balance_weight=0.5)
    route = tf.constant([[2.0, 1.0, 0.0, 0.0], [2.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 2.0], [2.0, 1.0, 0.0, 0.0]])
    moe(tf.ones([4, 2]), route=route)
    moe.router.kernel.assign(tf.eye(4))  # logits = route
    moe.router.bias.assign(tf.zeros(4))
    moe(tf.ones([4, 2]), route=route)
    # Top-2: {0,1}, {0,2}, {3,2}, {0,1} -> slot shares f = (3, 2, 2, 1) / 8.
    f = np.array([3, 2, 2, 1]) / 8
    # Router probabilities: softmax of (2,1,0,0) twice, of (2,0,1,0), of (0,0,1,2); P = their mean.
    a, b, c = math.exp(2), math.exp(1), 1.0
    z = a + b + 2 * c
    p1, p2, p3 = np.array([a, b, c, c]) / z, np.array([a, c, b, c]) / z, np.array([c, c, b, a]) / z
    p = (2 * p1 + p2 + p3) / 4
    expected = 0.5 * 4 * float(f @ p)
    assert len(moe.losses) == 1
    np.testing.assert_allclose(float(moe.losses[0]), expected, rtol=1e-6)
    # By hand: P ~ (0.478, 0.154, 0.154, 0.215), f . P ~ 0.283, x E x 0.5 ~ 0.566.
    assert expected == pytest.approx(0.566, abs=1e-3)
    # Perfectly balanced routing would give 0.5 * 1; this one is worse.
    assert expected > 0.5
    # In the model: off by default, one loss term when enabled, added to the training loss.
    f_ = batch()
    model = GRecModel(GRecConfig(**SMALL, load_balance_weight=0.1), VOCAB)
    out = model(f_)
    assert len(model.losses) == 1
    plain = GRecModel(GRecConfig(**SMALL), VOCAB)
    plain(f_)
    plain.set_weights(model.get_weights())
    np.testing.assert_allclose(float(model.compute_losses(f_, out)),
                               float(plain.compute_losses(f_, plain(f_))) + float(model.losses[0]), rtol=1e-5)


def test_capacity_drops_units_over_capacity_while_training_only():
    x = tf.ones([8, 4]) * tf.range(1.0, 9.0)[:, None]
    route = tf.ones([8, 4])  # every unit asks for the same k experts
    moe = SparseMoE(num_experts=4, top_k=2, expert_units=(8,), capacity_factor=1.0)
    stats = []
    y = moe(x, route=route, training=True, stats=stats).numpy()
    capacity = math.ceil(1.0 * 2 * 8 / 4)  # C = ceil(cf * k * units / E) = 4 units per expert
    assert int(stats[0]["capacity"]) == capacity
    assert sorted(stats[0]["expert_rows"].numpy()) == [0, 0, capacity, capacity]
    assert int(stats[0]["dropped_slots"]) == 2 * (8 - capacity)
    assert (np.abs(y).sum(1) == 0).sum() == 8 - capacity  # dropped units get nothing
    stats = []
    y = moe(x, route=route, training=False, stats=stats).numpy()  # inference: no limit by default
    assert int(stats[0]["dropped_slots"]) == 0 and stats[0]["capacity"] is None
    # The default config has no capacity: a training forward drops nothing.
    model = GRecModel(GRecConfig(**SMALL), VOCAB)
    assert int(model.moe_stats(batch(), training=True)[0]["dropped_slots"]) == 0


def test_extracted_subnetwork_predicts_like_the_full_model_for_its_scenario_and_task():
    scenarios = [3, 3, 5, 5, 3, 7]
    f = batch(0, scenarios)
    config = GRecConfig(**{**SMALL, "num_experts": 8, "top_k": 2})
    model = trained(config, f)
    full = model(f)
    moe_params = count_params(model.moe)
    bound = config.top_k / config.num_experts * count_params(model) + (count_params(model) - moe_params)
    routes = set()
    for s in sorted(set(scenarios)):
        rows = [i for i, x in enumerate(scenarios) if x == s]
        part = {k: tf.gather(v, rows) for k, v in f.items()}
        for t in TASKS:
            sub = extract_subnetwork(model, s, t)
            out = sub(part)
            assert set(out) == {t, f"{t}_logit"}
            np.testing.assert_allclose(out[f"{t}_logit"].numpy(), tf.gather(full[f"{t}_logit"], rows).numpy(),
                                       rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(out[t].numpy(), tf.gather(full[t], rows).numpy(), rtol=1e-6, atol=1e-7)
            assert len(sub.expert_ids) == 2
            assert count_params(sub) <= bound and count_params(sub) < count_params(model)
            routes.add(sub.expert_ids)
    assert len(routes) > 1  # the pairs do not all share one route: the check above means something
    # Another scenario's sub-network would predict differently.
    other = extract_subnetwork(model, 7, "click")
    rows3 = {k: tf.gather(v, [0, 1, 4]) for k, v in f.items()}
    if other.expert_ids != extract_subnetwork(model, 3, "click").expert_ids:
        assert not np.allclose(other(rows3)["click_logit"].numpy(),
                               tf.gather(full["click_logit"], [0, 1, 4]).numpy(), atol=1e-6)


def test_subnetwork_keeps_only_k_experts():
    f = batch()
    model = GRecModel(GRecConfig(**{**SMALL, "num_experts": 8, "top_k": 2}), VOCAB)
    model(f)
    sub = extract_subnetwork(model, int(f["scenario_id"][0]), "cart")
    assert count_params(sub.experts) * 4 == count_params(model.moe) - count_params(model.moe.router)
    with pytest.raises(ValueError, match="task_sentence"):
        other = GRecModel(GRecConfig(**{**SMALL, "routing": "token"}), VOCAB)
        other(f)
        extract_subnetwork(other, 1, "click")
    fixed = FixedExperts((4, 3), (0.25, 0.75), name="x")
    assert FixedExperts.from_config(fixed.get_config()).get_config() == fixed.get_config()


def test_task_upsampling_weights_each_scenario_by_its_inverse_share():
    f = batch(0, [1, 1, 1, 1, 2, 3])  # click population: 4, 1, 1 rows; clicks (rows 0, 2, 4): 2, 1, 0
    config = GRecConfig(**SMALL, task_upsampling=True, max_upsampling=3.0)
    model = GRecModel(config, VOCAB)
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
    model(f)
    np.testing.assert_allclose(model.upsampling_weights(f, "click").numpy(), np.ones(B))  # nothing counted yet
    model.train_step(f)
    counts = model.task_counts.numpy()
    np.testing.assert_allclose(counts[[1, 2, 3]], [[4, 2, 2], [1, 1, 1], [1, 0, 0]])
    np.testing.assert_allclose(model.upsampling_weights(f, "click").numpy(), [1, 1, 1, 1, 3, 3])  # 4/1 capped at 3
    np.testing.assert_allclose(model.upsampling_weights(f, "conversion").numpy(), [1, 1, 1, 1, 2, 1])
    out = model(f)
    ce = {t: tf.nn.sigmoid_cross_entropy_with_logits(labels=f[t], logits=out[f"{t}_logit"]).numpy() for t in TASKS}
    w_click = np.array([1, 1, 1, 1, 3, 3.0])
    w_conv = np.array([1, 0, 1, 0, 2, 0.0])  # clicked rows only, scenario 2 upsampled x2
    expected = (ce["click"] @ w_click / w_click.sum() + ce["conversion"] @ w_conv / w_conv.sum()
                + ce["cart"] @ w_conv / w_conv.sum())
    np.testing.assert_allclose(float(model.compute_losses(f, out)), expected, rtol=1e-5)
    # Evaluation does not count.
    model.test_step(f)
    np.testing.assert_allclose(model.task_counts.numpy(), counts)


def test_parallel_block_matches_equation_4():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(3, 5, 8)), tf.float32)
    mask = tf.constant(np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], bool))
    block = ParallelTransformerBlock(model_dim=8, num_heads=2, ff_units=12)
    y = block(x, padding_mask=mask)
    assert block.attention.head_dim == 8  # a head is d wide, not d / h
    h = block.norm(x)
    by_hand = x + block.mlp_out(block.mlp_in(h)) + block.attention(h, padding_mask=mask)
    np.testing.assert_allclose(y.numpy(), by_hand.numpy(), atol=1e-6)
    # Parallel, not sequential: Equation 3 gives something else.
    sequential = x + block.mlp_out(block.mlp_in(block.norm(x + block.attention(h, padding_mask=mask))))
    assert not np.allclose(y.numpy(), sequential.numpy(), atol=1e-3)


def test_multi_query_attention_shares_one_key_value_projection():
    rng = np.random.default_rng(2)
    heads, head_dim, d = 4, 3, 10
    mqa = MultiQueryAttention(num_heads=heads, head_dim=head_dim, output_dim=d)
    x = rng.normal(size=(2, 6, d)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]], bool)
    y = mqa(tf.constant(x), padding_mask=tf.constant(mask)).numpy()
    assert mqa.query.kernel.shape == (d, heads * head_dim)
    assert mqa.key.kernel.shape == (d, head_dim) and mqa.value.kernel.shape == (d, head_dim)  # one K/V, not h
    assert len(mqa.trainable_weights) == 4
    q = (x @ mqa.query.kernel.numpy()).reshape(2, 6, heads, head_dim)
    k, v = x @ mqa.key.kernel.numpy(), x @ mqa.value.kernel.numpy()
    scores = np.einsum("bshd,btd->bhst", q, k) / math.sqrt(head_dim)
    scores = np.where(mask[:, None, None, :], scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out = np.einsum("bhst,btd->bshd", p, v).reshape(2, 6, heads * head_dim) @ mqa.output_projection.kernel.numpy()
    np.testing.assert_allclose(y, out, atol=1e-5)
    x2 = x.copy()
    x2[0, 4:] = 50.0  # padded keys do not matter
    np.testing.assert_allclose(mqa(tf.constant(x2), padding_mask=tf.constant(mask)).numpy()[0, :4], y[0, :4],
                               atol=1e-5)


def test_outputs_and_a_few_train_steps_lower_the_loss_for_each_routing():
    data = batch()
    for routing in ROUTINGS:
        tf_keras.utils.set_random_seed(0)  # Python's random too: Keras initializers draw their seeds from it
        config = GRecConfig(**{**SMALL, "routing": routing, "learning_rate": 0.02})
        model = GRecModel(config, VOCAB)
        model.compile(optimizer=tf_keras.optimizers.Adam(config.learning_rate))
        out = model(data)
        for t in TASKS:
            p = out[t].numpy()
            assert p.shape == (B,) and ((p > 0) & (p < 1)).all()
            np.testing.assert_allclose(p, tf.sigmoid(out[f"{t}_logit"]).numpy(), rtol=1e-6)
        first = float(model.compute_losses(data, out))
        for _ in range(8):
            logs = model.train_step(data)
        assert float(model.compute_losses(data, model(data))) < 0.5 * first, routing
        assert set(logs) == {"loss", "auc_click", "auc_conversion", "auc_cart"}


def test_get_config_round_trips():
    mqa = MultiQueryAttention(num_heads=2, head_dim=3, output_dim=6, dropout=0.1, name="m")
    assert MultiQueryAttention.from_config(mqa.get_config()).get_config() == mqa.get_config()
    block = ParallelTransformerBlock(model_dim=8, num_heads=2, ff_units=12, head_dim=4, name="b")
    assert ParallelTransformerBlock.from_config(block.get_config()).get_config() == block.get_config()
    moe = SparseMoE(num_experts=6, top_k=3, expert_units=(5, 4), capacity_factor=1.5, eval_capacity_factor=3.0,
                    load_balance_weight=0.1, name="e")
    assert SparseMoE.from_config(moe.get_config()).get_config() == moe.get_config()
    enc = GRecModel(GRecConfig(**SMALL), VOCAB).encoder
    assert GRecInput.from_config(enc.get_config()).get_config() == enc.get_config()
    model = GRecModel(GRecConfig(**{**SMALL, "routing": "task", "num_layers": 2}), VOCAB)
    model(batch())
    clone = GRecModel.from_config(model.get_config())
    assert clone.config == model.config and clone.vocab_sizes == VOCAB
    clone(batch())
    assert [w.shape for w in clone.weights] == [w.shape for w in model.weights]
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(batch())["cart"].numpy(), model(batch())["cart"].numpy(), rtol=1e-5)


def test_config_is_checked():
    assert GRecConfig().routing == "task_sentence"
    c = GRecConfig.from_dict({"head_units": [8, 4], "routing": "token", "expert_units": [32]})
    assert c.head_units == (8, 4) and c.expert_units == (32,)
    with pytest.raises(ValueError, match="unknown GRecConfig field"):
        GRecConfig.from_dict({"experts": 4})
    with pytest.raises(ValueError, match="routing"):
        GRecConfig(routing="expert")
    with pytest.raises(ValueError, match="top_k"):
        GRecConfig(num_experts=2, top_k=3)
    with pytest.raises(ValueError, match="sequence_pooling"):
        GRecConfig(sequence_pooling="max")
