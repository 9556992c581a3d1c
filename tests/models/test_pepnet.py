import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from models.keep import TASKS
from models.pepnet import EPNet, GateNU, PEPNetConfig, PEPNetModel, PPNet

B, L = 8, 5
VOCAB = {"user_id": 30, "item_id": 40, "category_id": 12, "shop_id": 9, "scenario_id": 10, "user_gender": 5,
         "user_age_bucket": 8, "hour": 25}
SMALL = dict(embedding_dim=4, tower_units=(8, 4))


def batch(seed=0, domain_stats=True):
    rng = np.random.default_rng(seed)
    f = {name: tf.constant(rng.integers(1, size, B), tf.int64) for name, size in VOCAB.items()}
    hist = rng.integers(1, 40, (B, L))
    hist[:, 3:] = 0  # padding
    f["hist_item_ids"] = tf.constant(hist, tf.int64)
    f["hist_category_ids"] = tf.constant(np.where(hist > 0, hist % 11 + 1, 0), tf.int64)
    f["item_price"] = tf.constant(rng.normal(size=B), tf.float32)
    if domain_stats:
        f["user_scenario_exposures"] = tf.constant(rng.normal(size=B), tf.float32)
        f["item_scenario_exposures"] = tf.constant(rng.normal(size=B), tf.float32)
    f["click"] = tf.constant([1, 0, 1, 0, 1, 0, 1, 1], tf.float32)
    f["conversion"] = tf.constant([1, 0, 0, 0, 0, 0, 1, 0], tf.float32)
    f["cart"] = tf.constant([0, 0, 1, 0, 1, 0, 0, 1], tf.float32)
    return f


def built_model(**overrides):
    tf.random.set_seed(0)
    model = PEPNetModel(PEPNetConfig(**{**SMALL, **overrides}), VOCAB)
    model(batch())
    return model


def norm(grad):
    return 0.0 if grad is None else float(tf.norm(tf.convert_to_tensor(grad)))


def test_gate_nu_outputs_lie_in_zero_gamma():
    x = tf.constant(np.random.default_rng(0).normal(scale=3.0, size=(64, 10)), tf.float32)
    for gamma in (2.0, 0.5):
        delta = GateNU(units=7, gamma=gamma, hidden_units=5)(x).numpy()
        assert delta.shape == (64, 7)
        assert (delta > 0).all() and (delta < gamma).all()
        assert delta.std() > 1e-3  # a gate, not a constant
    assert GateNU(3).get_config()["gamma"] == 2.0  # the paper's default


def test_epnet_gate_does_not_train_the_general_embeddings():
    model = built_model()
    f = batch(1)
    category, scenario = model.embeddings["category_id"].embeddings, model.embeddings["scenario_id"].embeddings
    w = tf.constant(np.random.default_rng(2).normal(size=(B, 1)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        general, domain = model.general_embedding(f), model.domain_input(f)
        delta_domain, o_ep = model.epnet([domain, general])
        gated = tf.reduce_sum(delta_domain * w)
        # The same Gate NU fed E without stop_gradient: what a missing stop_gradient would do.
        unstopped = tf.reduce_sum(model.epnet.gate(tf.concat([domain, general], -1)) * w)
        through_o_ep = tf.reduce_sum(o_ep * w)
    assert norm(tape.gradient(gated, category)) == 0.0  # Equation 5: no gradient to E
    assert norm(tape.gradient(unstopped, category)) > 0.0  # the path exists: the check can fail
    assert norm(tape.gradient(gated, scenario)) > 0.0  # the domain side does train through the gate
    assert norm(tape.gradient(through_o_ep, category)) > 0.0  # E trains through O_ep = delta * E


def test_ppnet_gates_do_not_train_epnet():
    model = built_model()
    f = batch(1)
    tables = {n: model.embeddings[n].embeddings for n in ("category_id", "scenario_id", "user_id")}
    w = np.random.default_rng(3)
    with tf.GradientTape(persistent=True) as tape:
        prior, _, o_ep = model.personalize(f)
        gates = model.ppnet.gates(prior, o_ep)
        weights = [{t: tf.constant(w.normal(size=g[t].shape), tf.float32) for t in TASKS} for g in gates]
        gated = tf.add_n([tf.reduce_sum(g[t] * wt[t]) for g, wt in zip(gates, weights) for t in TASKS])
        x = tf.concat([prior, o_ep], -1)  # no stop_gradient
        unstopped = tf.add_n([tf.reduce_sum(nu(x) * tf.concat([wt[t] for t in TASKS], -1))
                              for nu, wt in zip(model.ppnet.gates_nu, weights)])
    # category_id is only in E and scenario_id only in F_d: both reach the gates through O_ep alone.
    assert norm(tape.gradient(gated, tables["category_id"])) == 0.0
    assert norm(tape.gradient(gated, tables["scenario_id"])) == 0.0
    assert all(g is None for g in tape.gradient(gated, model.epnet.trainable_variables))
    assert norm(tape.gradient(unstopped, tables["category_id"])) > 0.0  # the check can fail
    assert norm(tape.gradient(unstopped, tables["scenario_id"])) > 0.0
    assert norm(tape.gradient(gated, tables["user_id"])) > 0.0  # O_prior does train (Equation 7)


@pytest.mark.parametrize("gate_input", [True, False])
def test_ppnet_gates_every_layer_of_every_task(gate_input):
    model = built_model(gate_tower_input=gate_input)
    f = batch(1)
    prior, _, o_ep = model.personalize(f)
    gates = model.ppnet.gates(prior, o_ep)
    widths = ([int(o_ep.shape[-1])] if gate_input else []) + [8, 4]
    assert [int(g["click"].shape[-1]) for g in gates] == widths
    assert all(set(g) == set(TASKS) for g in gates)
    base = model.ppnet.towers(o_ep, gates)
    out = model(f)
    for t in TASKS:  # the model runs its towers under exactly these gates
        np.testing.assert_allclose(out[f"{t}_logit"].numpy(), base[t].numpy(), rtol=1e-5, atol=1e-6)
    for layer in range(len(gates)):
        for task in TASKS:
            altered = [dict(g) for g in gates]
            altered[layer][task] = tf.zeros_like(gates[layer][task])
            logits = model.ppnet.towers(o_ep, altered)
            for t in TASKS:
                same = np.allclose(logits[t].numpy(), base[t].numpy())
                assert same == (t != task), (layer, task, t)


def test_train_steps_lower_the_loss_with_two_optimizers():
    tf.random.set_seed(0)
    config = PEPNetConfig(**SMALL, embedding_optimizer="adagrad", embedding_learning_rate=0.2,
                          dense_learning_rate=0.02)
    model = PEPNetModel(config, VOCAB)
    model.compile()  # no optimizer argument: both come from the config
    data = batch()
    first = float(model.compute_losses(data, model(data)))
    initial = {v.ref(): v.numpy().copy() for v in model.trainable_variables}
    # Enough steps that the drop does not hang on the initialisation (8 steps left 0.42-0.83 of the loss).
    steps = 40
    # In a graph, as fit runs it; without autograph, whose conversion of the Keras
    # internals would cost ~30 s of tracing here (the step has no Python control flow on tensors).
    train_step = tf.function(model.train_step, autograph=False)
    for _ in range(steps):
        logs = train_step(data)
    assert set(logs) == {"loss", "auc_click", "auc_conversion", "auc_cart"}
    assert float(model.compute_losses(data, model(data))) < 0.7 * first

    emb_opt, dense_opt = model.embedding_optimizer, model.optimizer
    assert isinstance(emb_opt, tf_keras.optimizers.Adagrad) and isinstance(dense_opt, tf_keras.optimizers.Adam)
    assert int(emb_opt.iterations) == steps and int(dense_opt.iterations) == steps
    emb_vars, dense_vars = model.split_variables()
    assert len(emb_vars) == len(model.embeddings) == len(config.embedding_tables())
    assert {v.ref() for v in emb_vars} | {v.ref() for v in dense_vars} == {v.ref() for v in model.trainable_variables}
    # Each optimizer holds slots for its own variables only.
    assert set(emb_opt._index_dict) == {v._unique_id for v in emb_vars}
    assert set(dense_opt._index_dict) == {v._unique_id for v in dense_vars}
    assert len(emb_opt._accumulators) == len(emb_vars)
    assert len(dense_opt._momentums) == len(dense_vars)
    for v in emb_vars:  # Adagrad's accumulators grew from their initial 0.1 on the rows seen
        acc = emb_opt._accumulators[emb_opt._index_dict[v._unique_id]].numpy()
        assert acc.max() > 0.1 + 1e-6
        assert not np.array_equal(v.numpy(), initial[v.ref()])
    moved = [np.abs(m.numpy()).max() > 0 for m in dense_opt._momentums]
    assert all(moved)


def test_domain_statistics_are_optional():
    with_stats = built_model()
    without = PEPNetModel(PEPNetConfig(**SMALL), VOCAB)
    out = without(batch(domain_stats=False))
    assert out["click"].shape == (B,)
    # The Gate NU of EPNet reads 2 more inputs when the statistics are present.
    kernel = lambda m: int(m.epnet.gate.hidden.kernel.shape[0])
    assert kernel(with_stats) == kernel(without) + 2
    with pytest.raises(ValueError, match="domain statistics"):
        without(batch())
    none = PEPNetModel(PEPNetConfig(**SMALL, domain_numeric_features=()), VOCAB)
    none(batch())
    assert kernel(none) == kernel(without)


def test_get_config_round_trips():
    gate = GateNU.from_config(GateNU(5, gamma=1.5, hidden_units=3, name="g").get_config())
    assert (gate.units, gate.gamma, gate.hidden_units) == (5, 1.5, 3)
    ep = EPNet.from_config(EPNet(gamma=1.5, hidden_units=6).get_config())
    assert (ep.gamma, ep.hidden_units) == (1.5, 6)
    pp = PPNet.from_config(PPNet(("click", "cart"), (6, 3), gamma=1.0, gate_tower_input=False).get_config())
    assert (pp.tasks, pp.tower_units, pp.gamma, pp.gate_tower_input) == (("click", "cart"), (6, 3), 1.0, False)

    model = built_model()
    clone = PEPNetModel.from_config(model.get_config())
    assert clone.config == model.config and clone.vocab_sizes == model.vocab_sizes
    f = batch(1)
    clone(f)
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(f)["cart"].numpy(), model(f)["cart"].numpy(), rtol=1e-6)

    assert PEPNetConfig.from_dict({"tower_units": [8, 4]}).tower_units == (8, 4)
    with pytest.raises(ValueError, match="unknown PEPNetConfig field"):
        PEPNetConfig.from_dict({"tower_unit": [8]})
