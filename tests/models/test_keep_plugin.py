import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from models.keep_plugin import DownstreamConfig, DownstreamModel, KnowledgePlugin, save_checkpoint, warm_start

VOCAB = {"user_id": 30, "item_id": 40, "category_id": 12, "shop_id": 9, "user_gender": 5, "user_age_bucket": 8,
         "hour": 25}
B, K = 32, 20
SMALL = dict(hidden_units=(8, 6, 4), plugin_units=(5,))


def batch(seed=0):
    rng = np.random.default_rng(seed)
    f = {n: tf.constant(rng.integers(1, s, B), tf.int64) for n, s in VOCAB.items()}
    h = rng.integers(1, 40, (B, 5))
    h[:, 3:] = 0
    f["hist_item_ids"] = tf.constant(h, tf.int64)
    f["hist_category_ids"] = tf.constant(np.where(h > 0, h % 11 + 1, 0), tf.int64)
    f["item_price"] = tf.constant(rng.normal(size=B), tf.float32)
    click = rng.integers(0, 2, B)
    f["click"] = tf.constant(click, tf.float32)
    # Knowledge that carries the label: what the plug-in should learn to use.
    knowledge = rng.normal(size=(B, K))
    knowledge[:, 0] = 3.0 * (2 * click - 1)
    f["knowledge"] = tf.constant(knowledge, tf.float32)
    return f


def model(seed=0, **overrides):
    tf.random.set_seed(seed)
    m = DownstreamModel(DownstreamConfig(**{**SMALL, **overrides}), VOCAB)
    m.compile(optimizer=tf_keras.optimizers.Adam(0.01))
    m(batch())
    return m


@pytest.fixture(scope="module")
def plain_checkpoint(tmp_path_factory):
    plain = model()
    for _ in range(5):
        plain.train_step(batch())
    return plain, save_checkpoint(plain, str(tmp_path_factory.mktemp("plain") / "ckpt"))


def test_every_plain_variable_restores_into_the_plugged_model_and_only_the_plugin_is_new(plain_checkpoint):
    plain, checkpoint = plain_checkpoint
    plugged = model(seed=7, knowledge_width=K, plugin_layer=1)
    restored, new = warm_start(plugged, checkpoint)
    assert new and all(k.startswith("model/plugin/") for k in new)
    assert len(new) == 4  # one hidden layer and the projection: kernels and biases
    assert len(restored) == len(plain.trainable_variables)
    plugin = {v.ref() for v in plugged.plugin_variables()}
    base = [v for v in plugged.trainable_variables if v.ref() not in plugin]
    assert [v.shape for v in base] == [v.shape for v in plain.trainable_variables]
    for mine, theirs in zip(base, plain.trainable_variables):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    # A fresh plug-in adds zero: the plugged model predicts what the plain one did.
    f = batch(3)
    np.testing.assert_array_equal(plugged(f)["click"].numpy(), plain(f)["click"].numpy())


def test_plugged_training_uses_the_knowledge(plain_checkpoint):
    plain, checkpoint = plain_checkpoint
    # Plugged at the last dense layer, whose output reaches the logit linearly (no ReLU to die behind it).
    plugged = model(seed=7, knowledge_width=K, plugin_layer=2, plugin_units=(16,))
    warm_start(plugged, checkpoint)
    f = batch()
    before = float(plugged.compute_loss_of(f, plugged(f)))
    for _ in range(30):
        logs = plugged.train_step(f)
    assert set(logs) == {"loss", "auc_click"}
    assert float(tf.reduce_max(tf.abs(plugged.plugin.projection.kernel))) > 0
    assert float(plugged.compute_loss_of(f, plugged(f))) < 0.7 * before
    # The label lives in the knowledge's first column: flipping it lowers the clicked
    # rows' logits and raises the others'.
    flipped = dict(f, knowledge=tf.concat([-f["knowledge"][:, :1], f["knowledge"][:, 1:]], 1))
    shift = (plugged(f)["click_logit"] - plugged(flipped)["click_logit"]).numpy()
    click = f["click"].numpy() == 1
    assert shift[click].mean() > 0 > shift[~click].mean()


def test_equation_5_adds_the_projected_knowledge_to_h_m():
    m = model(knowledge_width=K, plugin_layer=1)
    for v in m.plugin.trainable_variables:  # a non-zero projection
        v.assign(tf.random.stateless_normal(v.shape, seed=[1, 2]))
    f = batch(2)
    # The same forward pass by hand, from the plain model's layers.
    c = m.config
    emb = {n: m.embeddings[n](f[n]) for n in c.id_features}
    keys = tf.concat([m.embeddings[t](f[s]) for s, t in c.sequence_features], -1)
    query = tf.concat([emb[t] for _, t in c.sequence_features], -1)
    mask = (f["hist_item_ids"] > 0) | (f["hist_category_ids"] > 0)
    h = tf.concat([emb[n] for n in c.id_features] + [tf.reshape(f["item_price"], [-1, 1]),
                                                      m.attention(query, keys, mask)], -1)
    h = m.dense_layers[0](h)
    h = m.dense_layers[1](h) + m.plugin(f["knowledge"])  # h'_1 = h_1 + MLP(K)
    h = m.dense_layers[2](h)
    np.testing.assert_allclose(m(f)["click_logit"].numpy(), tf.squeeze(m.logit(h), -1).numpy(), rtol=1e-5)


def test_a_plugged_model_warm_starts_from_yesterdays_plugged_model(tmp_path):
    yesterday = model(seed=1, knowledge_width=K)
    yesterday.train_step(batch())
    checkpoint = save_checkpoint(yesterday, str(tmp_path / "ckpt"))
    today = model(seed=2, knowledge_width=K)
    restored, new = warm_start(today, checkpoint)
    assert new == [] and any(k.startswith("model/plugin/") for k in restored)
    f = batch(4)
    np.testing.assert_array_equal(today(f)["click"].numpy(), yesterday(f)["click"].numpy())


def test_warm_start_refuses_another_architecture(plain_checkpoint, tmp_path):
    _, checkpoint = plain_checkpoint
    deeper = model(hidden_units=(8, 6, 4, 2))
    with pytest.raises(ValueError, match="lacks variables of the base model: .*dense_layers/3"):
        warm_start(deeper, checkpoint)
    shallower = model(hidden_units=(8, 6))
    with pytest.raises(ValueError, match="no place for: .*dense_layers/2"):
        warm_start(shallower, checkpoint)
    wider = model(hidden_units=(9, 4, 2))
    with pytest.raises(ValueError, match="another shape: .*dense_layers/0"):
        warm_start(wider, checkpoint)
    with pytest.raises(ValueError, match="build the model"):
        warm_start(DownstreamModel(DownstreamConfig(**SMALL), VOCAB), checkpoint)


def test_configs():
    with pytest.raises(ValueError, match="plugin_layer 3"):
        DownstreamConfig(hidden_units=(8, 4, 2), plugin_layer=3)
    with pytest.raises(ValueError, match="unknown DownstreamConfig field"):
        DownstreamConfig.from_dict({"plugin": 1})
    m = model(knowledge_width=K)
    again = DownstreamModel.from_config(m.get_config())
    assert again.config == m.config and again.config.plugged
    layer = KnowledgePlugin(units=6, hidden_units=(3,), name="p")
    assert KnowledgePlugin.from_config(layer.get_config()).get_config() == layer.get_config()
    out = layer(tf.ones((2, 5)))
    assert out.shape == (2, 6) and float(tf.reduce_max(tf.abs(out))) == 0.0  # starts at zero
