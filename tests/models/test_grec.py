import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from models.grec import (ROUTINGS, GRecConfig, GRecModel, MultiQueryAttention, ParallelTransformerBlock, SparseMoE,
                         count_expert_flops)
from models.keep import TASKS

B, L = 6, 5
VOCAB = {"user_id": 30, "item_id": 40, "category_id": 12, "shop_id": 9, "scenario_id": 10, "user_gender": 5,
         "user_age_bucket": 8, "hour": 25}
SMALL = dict(num_experts=4, top_k=2, model_dim=16, num_heads=4, ff_units=16, expert_units=16, embedding_dim=8,
             head_units=(16,))


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


def real_tokens_per_sentence(f):
    return 4 + (f["hist_item_ids"].numpy() > 0).sum(1)  # objective, scenario, item, context + history


def test_top_k_selects_exactly_k_distinct_experts_per_routed_unit():
    f = batch()
    for routing in ROUTINGS:
        for k in (1, 3):
            model = GRecModel(GRecConfig(**{**SMALL, "routing": routing, "top_k": k}), VOCAB)
            (stats,) = model.moe_stats(f)
            experts = stats["experts"].numpy()
            units = real_tokens_per_sentence(f).sum() * len(TASKS) if routing == "token" else B * len(TASKS)
            assert experts.shape == (units, k), routing
            assert ((experts >= 0) & (experts < 4)).all()
            assert all(len(set(row)) == k for row in experts), routing
            # Without a capacity limit every unit runs on its k experts: k x real tokens rows.
            assert int(tf.reduce_sum(stats["expert_rows"])) == k * real_tokens_per_sentence(f).sum() * len(TASKS)


def test_same_task_sentence_routes_identically_whatever_the_other_tokens():
    tf.random.set_seed(1)
    model = GRecModel(GRecConfig(**{**SMALL, "routing": "task_sentence", "num_experts": 8, "top_k": 2}), VOCAB)
    scenarios = [3, 3, 5, 5, 3, 7]
    a, b = batch(0, scenarios), batch(1, scenarios)  # other features (user, item, history) all differ
    ea = model.moe_stats(a)[0]["experts"].numpy().reshape(len(TASKS), B, 2)
    eb = model.moe_stats(b)[0]["experts"].numpy().reshape(len(TASKS), B, 2)
    for t in range(len(TASKS)):
        for i in range(B):
            for j in range(B):
                if scenarios[i] == scenarios[j]:
                    assert set(ea[t, i]) == set(ea[t, j]) == set(eb[t, j])
    # The router runs once per distinct (scenario, task), not per sample.
    assert int(model.moe_stats(a)[0]["router_evaluations"]) == len(set(scenarios)) * len(TASKS)
    # Token-level routing of the same tokens is not constrained that way.
    token = GRecModel(GRecConfig(**{**SMALL, "routing": "token", "num_experts": 8}), VOCAB)
    assert int(token.moe_stats(a)[0]["router_evaluations"]) == real_tokens_per_sentence(a).sum() * len(TASKS)


def test_task_sentence_routing_costs_fewer_flops_than_token_routing():
    f = batch(scenarios=[1, 2, 1, 2, 1, 2])
    counts = {}
    for routing in ROUTINGS:
        model = GRecModel(GRecConfig(**{**SMALL, "routing": routing, "num_layers": 2}), VOCAB)
        counts[routing] = count_expert_flops(model, f)
    token, task_sentence = counts["token"], counts["task_sentence"]
    assert task_sentence["flops"] < token["flops"]
    assert task_sentence["router_flops"] < token["router_flops"] / 10
    # Sparse dispatch everywhere: each real token runs on exactly k experts whatever the routing.
    assert len({c["expert_flops"] for c in counts.values()}) == 1
    rows = 2 * 2 * real_tokens_per_sentence(f).sum() * len(TASKS)  # layers x k x tokens
    assert token["expert_rows"] == rows
    assert token["expert_flops"] == rows * 2 * (2 * 16 * 16)
    assert counts["task"]["router_flops"] < task_sentence["router_flops"]


def test_group_routing_runs_each_expert_on_its_own_sentences_only():
    rng = np.random.default_rng(3)
    g, s, d, e = 5, 4, 6, 4
    x = tf.constant(rng.normal(size=(g, s, d)), tf.float32)
    mask = tf.constant(np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0]], bool))
    route = tf.constant(rng.normal(size=(g, d)), tf.float32)
    for routing in ROUTINGS:
        moe = SparseMoE(num_experts=e, top_k=2, expert_units=8, routing=routing, load_balance_weight=0.0)
        stats = []
        y = moe(x, padding_mask=mask, route=route, stats=stats).numpy()
        experts = stats[0]["experts"].numpy()
        # Dense reference: every expert on every token, combined with the top-k softmax weights.
        if routing == "token":
            logits = moe.router(tf.reshape(x, [-1, d])).numpy().reshape(g, s, e)
        elif routing == "sentence":
            m = mask.numpy()[..., None]
            logits = np.repeat(moe.router(tf.constant((x.numpy() * m).sum(1) / m.sum(1))).numpy()[:, None], s, 1)
        else:
            logits = np.repeat(moe.router(route).numpy()[:, None], s, 1)
        dense = np.stack([moe.expert(i, tf.reshape(x, [-1, d])).numpy().reshape(g, s, d) for i in range(e)], 2)
        top = np.argsort(-logits, -1)[..., :2]
        w = np.exp(np.take_along_axis(logits, top, -1))
        w /= w.sum(-1, keepdims=True)
        expected = (np.take_along_axis(dense, top[..., None], 2) * w[..., None]).sum(2) * mask.numpy()[..., None]
        np.testing.assert_allclose(y, expected, atol=1e-5, err_msg=routing)
        if routing != "token":
            tokens = mask.numpy().sum(1)
            for i in range(e):  # expert i ran on the real tokens of the sentences that chose it, nothing else
                assert int(stats[0]["expert_rows"][i]) == tokens[(experts == i).any(1)].sum()


def test_capacity_drops_units_over_capacity_while_training_only():
    x = tf.ones([8, 3, 4]) * tf.range(1.0, 9.0)[:, None, None]
    mask = tf.ones([8, 3], tf.bool)
    route = tf.ones([8, 4])  # every sentence asks for the same k experts
    moe = SparseMoE(num_experts=4, top_k=2, expert_units=8, routing="task", capacity_factor=1.0,
                    load_balance_weight=0.0)
    stats = []
    y = moe(x, padding_mask=mask, route=route, training=True, stats=stats).numpy()
    capacity = math.ceil(1.0 * 2 * 8 / 4)  # C = ceil(cf * k * units / E) = 4 sentences per expert
    assert int(stats[0]["capacity"]) == capacity
    rows = stats[0]["expert_rows"].numpy()
    assert sorted(rows) == [0, 0, capacity * 3, capacity * 3]
    assert int(stats[0]["dropped_slots"]) == 2 * (8 - capacity)
    # Dropped sentences get nothing from the MoE (the model's residual passes them on).
    assert (np.abs(y).sum((1, 2)) == 0).sum() == 8 - capacity
    # At inference (eval_capacity_factor 0) nothing is dropped.
    stats = []
    y = moe(x, padding_mask=mask, route=route, training=False, stats=stats).numpy()
    assert int(stats[0]["dropped_slots"]) == 0 and (np.abs(y).sum((1, 2)) > 0).all()
    # Token routing counts capacity in tokens.
    token = SparseMoE(num_experts=4, top_k=1, expert_units=8, routing="token", capacity_factor=0.5,
                      load_balance_weight=0.0)
    stats = []
    token(x, padding_mask=mask, training=True, stats=stats)
    assert int(stats[0]["capacity"]) == math.ceil(0.5 * 24 / 4)
    assert stats[0]["expert_rows"].numpy().max() <= math.ceil(0.5 * 24 / 4)


def test_parallel_block_matches_equation_4():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(3, 5, 8)), tf.float32)
    mask = tf.constant(np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], bool))
    block = ParallelTransformerBlock(model_dim=8, num_heads=2, ff_units=12)
    y = block(x, padding_mask=mask)
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
    # By hand: every head attends with its own query over the same K and V.
    q = (x @ mqa.query.kernel.numpy()).reshape(2, 6, heads, head_dim)
    k, v = x @ mqa.key.kernel.numpy(), x @ mqa.value.kernel.numpy()
    scores = np.einsum("bshd,btd->bhst", q, k) / math.sqrt(head_dim)
    scores = np.where(mask[:, None, None, :], scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out = np.einsum("bhst,btd->bshd", p, v).reshape(2, 6, heads * head_dim) @ mqa.output_projection.kernel.numpy()
    np.testing.assert_allclose(y, out, atol=1e-5)
    # Padded keys do not matter.
    x2 = x.copy()
    x2[0, 4:] = 50.0
    np.testing.assert_allclose(mqa(tf.constant(x2), padding_mask=tf.constant(mask)).numpy()[0, :4], y[0, :4],
                               atol=1e-5)


def test_outputs_and_a_few_train_steps_lower_the_loss_for_each_routing():
    data = batch()
    for routing in ROUTINGS:
        tf.random.set_seed(0)
        config = GRecConfig(**{**SMALL, "routing": routing, "learning_rate": 0.02})
        model = GRecModel(config, VOCAB)
        model.compile(optimizer=tf_keras.optimizers.Adam(config.learning_rate))
        out = model(data)
        for t in TASKS:
            p = out[t].numpy()
            assert p.shape == (B,) and ((p > 0) & (p < 1)).all()
            np.testing.assert_allclose(p, tf.sigmoid(out[f"{t}_logit"]).numpy(), rtol=1e-6)
        first = float(model.compute_losses(data, out))
        for _ in range(5):
            logs = model.train_step(data)
        assert float(model.compute_losses(data, model(data))) < 0.5 * first, routing
        assert set(logs) == {"loss", "auc_click", "auc_conversion", "auc_cart"}


def test_get_config_round_trips():
    mqa = MultiQueryAttention(num_heads=2, head_dim=3, output_dim=6, dropout=0.1, name="m")
    assert MultiQueryAttention.from_config(mqa.get_config()).get_config() == mqa.get_config()
    block = ParallelTransformerBlock(model_dim=8, num_heads=2, ff_units=12, name="b")
    assert ParallelTransformerBlock.from_config(block.get_config()).get_config() == block.get_config()
    moe = SparseMoE(num_experts=6, top_k=3, expert_units=5, routing="sentence", capacity_factor=1.5,
                    eval_capacity_factor=3.0, load_balance_weight=0.1, name="e")
    assert SparseMoE.from_config(moe.get_config()).get_config() == moe.get_config()
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
    assert GRecConfig.from_dict({"head_units": [8, 4], "routing": "token"}).head_units == (8, 4)
    with pytest.raises(ValueError, match="unknown GRecConfig field"):
        GRecConfig.from_dict({"experts": 4})
    with pytest.raises(ValueError, match="routing"):
        GRecConfig(routing="expert")
    with pytest.raises(ValueError, match="top_k"):
        GRecConfig(num_experts=2, top_k=3)
