"""KEEP stage two: the knowledge plug-in network and the downstream model it plugs into.

Paper: keep.txt, sections 3.2 and 4.3, Equation 5. A downstream ranking model of a
sub-scenario (here a production-like DNN: embeddings, DIN target attention over the
behaviour sequence, an MLP and a click logit) gains the general model's knowledge
K(u, i) without changing its architecture:

    h^k  = MLP(K(u, i))        # a shallow projection to the width of h_m
    h'_m = h_m + h^k           # added to the m-th dense layer's output     (Eq. 5)

Because adding keeps every shape, yesterday's plain downstream model restores into
the plugged one variable for variable; only the plug-in's variables are new.

Readings of the paper:
* h_m is the m-th dense layer's output after its activation (0-based `plugin_layer`
  here); the next layer reads h'_m.
* The paper does not say how the projection starts. Its output layer is
  zero-initialised, so a freshly plugged model predicts exactly what the warm-started
  plain model did, and training moves it from there (what an online-learning system
  needs: no jump in the served predictions when the plug-in lands).
* The knowledge arrives as one input, `knowledge` (K(u, i) from KEEP's `knowledge`
  signature or from the knowledge cache); its width is `knowledge_width`, and 0
  means the plain model.

Example:
    plain = DownstreamModel(DownstreamConfig(), vocab_sizes)
    plugged = DownstreamModel(DownstreamConfig(knowledge_width=288), vocab_sizes)
    plugged(features)                          # builds; features["knowledge"]: [B, 288]
    restored, new = warm_start(plugged, plain_checkpoint)
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence, Tuple

import tensorflow as tf
import tf_keras

from models.configs import FromDict
from models.keep import TargetAttention

KNOWLEDGE = "knowledge"


@dataclasses.dataclass(frozen=True)
class DownstreamConfig(FromDict):
    embedding_dim: int = 16
    hidden_units: Tuple[int, ...] = (200, 80)  # DIN's MLP, the paper's downstream base model
    attention_units: Tuple[int, ...] = (64, 32)
    plugin_layer: int = 0  # m: h_m is the output of this dense layer (0-based)
    plugin_units: Tuple[int, ...] = (64,)  # the shallow projection MLP's hidden layers
    knowledge_width: int = 0  # width of K(u, i); 0: the plain downstream model
    learning_rate: float = 1e-3
    batch_size: int = 512
    id_features: Tuple[str, ...] = ("user_id", "item_id", "category_id", "shop_id", "user_gender",
                                    "user_age_bucket", "hour")
    numeric_features: Tuple[str, ...] = ("item_price",)
    sequence_features: Tuple[Tuple[str, str], ...] = (("hist_item_ids", "item_id"),
                                                      ("hist_category_ids", "category_id"))

    def __post_init__(self):
        if not 0 <= self.plugin_layer < len(self.hidden_units):
            raise ValueError(f"plugin_layer {self.plugin_layer}: the model has dense layers "
                             f"0..{len(self.hidden_units) - 1}")

    @property
    def plugged(self) -> bool:
        return self.knowledge_width > 0


class KnowledgePlugin(tf_keras.layers.Layer):
    """Equation 5's projection h^k = MLP(K(u, i)), to the width of h_m.

    The output layer starts at zero, so plugging changes no prediction until trained.

    Example:
        plugin = KnowledgePlugin(units=200, hidden_units=(64,))
        h_k = plugin(knowledge)  # [B, K] -> [B, 200]
    """

    def __init__(self, units: int, hidden_units: Sequence[int] = (64,), **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.hidden_units = tuple(hidden_units)
        self.hidden = [tf_keras.layers.Dense(u, activation="relu", name=f"hidden_{i}")
                       for i, u in enumerate(self.hidden_units)]
        self.projection = tf_keras.layers.Dense(self.units, kernel_initializer="zeros", name="projection")

    def call(self, knowledge):
        h = tf.cast(knowledge, tf.float32)
        for layer in self.hidden:
            h = layer(h)
        return self.projection(h)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "hidden_units": self.hidden_units}


class DownstreamModel(tf_keras.Model):
    """A sub-scenario's CTR model, plain or with the knowledge plug-in (Eq. 5)."""

    def __init__(self, config: DownstreamConfig, vocab_sizes: Mapping[str, int], **kwargs):
        kwargs.setdefault("name", "downstream")
        super().__init__(**kwargs)
        self.config = config
        self.vocab_sizes = dict(vocab_sizes)
        self.embeddings = {n: tf_keras.layers.Embedding(self.vocab_sizes[n], config.embedding_dim,
                                                        name=f"embedding_{n}") for n in config.id_features}
        self.attention = TargetAttention(config.attention_units, name="target_attention")
        self.dense_layers = [tf_keras.layers.Dense(u, activation="relu", name=f"dense_{i}")
                             for i, u in enumerate(config.hidden_units)]
        self.logit = tf_keras.layers.Dense(1, name="logit")
        self.loss_tracker = tf_keras.metrics.Mean(name="loss")
        self.auc = tf_keras.metrics.AUC(name="auc_click")
        # Created last and only when plugged: the plain model's variables keep their paths.
        if config.plugged:
            self.plugin = KnowledgePlugin(config.hidden_units[config.plugin_layer], config.plugin_units,
                                          name="knowledge_plugin")

    def call(self, features, training=None):
        c = self.config
        emb = {n: self.embeddings[n](features[n]) for n in c.id_features}
        parts = [emb[n] for n in c.id_features]
        parts += [tf.reshape(tf.cast(features[n], tf.float32), [-1, 1]) for n in c.numeric_features]
        if c.sequence_features:
            keys = tf.concat([self.embeddings[t](features[s]) for s, t in c.sequence_features], -1)
            query = tf.concat([emb[t] for _, t in c.sequence_features], -1)
            mask = tf.reduce_any(tf.stack([features[s] > 0 for s, _ in c.sequence_features]), axis=0)
            parts.append(self.attention(query, keys, mask))
        h = tf.concat(parts, -1)
        for i, layer in enumerate(self.dense_layers):
            h = layer(h)
            if c.plugged and i == c.plugin_layer:
                h = h + self.plugin(features[KNOWLEDGE])  # Eq. 5: h'_m = h_m + MLP(K(u, i))
        logit = tf.squeeze(self.logit(h), -1)
        return {"click": tf.sigmoid(logit), "click_logit": logit}

    def compute_loss_of(self, features, outputs):
        labels = tf.cast(features["click"], tf.float32)
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=outputs["click_logit"]))

    def train_step(self, data):
        with tf.GradientTape() as tape:
            outputs = self(data, training=True)
            loss = self.compute_loss_of(data, outputs)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return self._update(data, outputs, loss)

    def test_step(self, data):
        outputs = self(data, training=False)
        return self._update(data, outputs, self.compute_loss_of(data, outputs))

    def _update(self, data, outputs, loss):
        self.loss_tracker.update_state(loss)
        self.auc.update_state(data["click"], outputs["click"])
        return {m.name: m.result() for m in self.metrics}

    @property
    def metrics(self):
        return [self.loss_tracker, self.auc]

    def plugin_variables(self):
        return list(self.plugin.trainable_variables) if self.config.plugged else []

    def get_config(self):
        return {"config": dataclasses.asdict(self.config), "vocab_sizes": self.vocab_sizes}

    @classmethod
    def from_config(cls, cfg):
        return cls(DownstreamConfig.from_dict(cfg["config"]), cfg["vocab_sizes"])


NOT_WEIGHTS = ("model/optimizer/", "model/auc/", "model/loss_tracker/")  # training state, not the model


def _variable_shapes(checkpoint: str):
    return {name: tuple(shape) for name, shape in tf.train.list_variables(checkpoint)
            if name.startswith("model/") and not name.startswith(NOT_WEIGHTS)}


def warm_start(model: DownstreamModel, checkpoint: str):
    """Restores a (plain or plugged) downstream checkpoint into a built `model`.

    Returns (restored, new): the checkpoint keys of the model's variables read from
    the checkpoint, and of those it does not hold. Raises if a non-plug-in variable is
    new, if the checkpoint holds a variable the model has no place for, or one of
    another shape (another architecture), before anything is assigned.
    """
    import tempfile

    if not model.built:
        raise ValueError("build the model (call it on a batch) before warm-starting it")
    saved_shapes = _variable_shapes(checkpoint)
    with tempfile.TemporaryDirectory() as tmp:  # the model's own keys, as the checkpoint names them
        own_shapes = _variable_shapes(tf.train.Checkpoint(model=model).write(f"{tmp}/own"))
    saved, own = set(saved_shapes), set(own_shapes)
    unplaced = sorted(saved - own)
    if unplaced:
        raise ValueError(f"{checkpoint}: holds variables this model has no place for: {unplaced[:5]}")
    new = sorted(own - saved)
    not_plugin = [k for k in new if not k.startswith("model/plugin/")]
    if not_plugin:
        raise ValueError(f"{checkpoint}: lacks variables of the base model: {not_plugin[:5]}")
    reshaped = sorted(k for k in saved & own if saved_shapes[k] != own_shapes[k])
    if reshaped:
        raise ValueError(f"{checkpoint}: variables of another shape: "
                         + ", ".join(f"{k} {saved_shapes[k]} vs {own_shapes[k]}" for k in reshaped[:3]))
    tf.train.Checkpoint(model=model).read(checkpoint).expect_partial()
    return sorted(own & saved), new


def save_checkpoint(model: DownstreamModel, prefix: str) -> str:
    """The model's variables as an object-based checkpoint (what warm_start reads)."""
    return tf.train.Checkpoint(model=model).write(prefix)
