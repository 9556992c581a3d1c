"""KEEP knowledge extraction: the supervised multi-task general model (paper section 4.2).

Architecture (Figure 3a, Figure 4): shared embeddings (the user id included), DIN
target attention of the candidate item over the behaviour sequence, then three task
towers with private MLP layers: click (trained over impressions), conversion and
add-to-cart (trained over clicks). Loss per task: L_point + alpha * L_pair
(Equations 1-3).

Readings of the paper:
* The paper's tower is [512, 256, 128, 64, 2] with a 2-way softmax; we keep its shape
  with a single sigmoid logit (equivalent for a binary label) and smaller default
  widths (256, 128, 64) that fit the synthetic data; K_ui is the output of the layer
  before the logit (the paper's "4-th layer", section 6.2).
* K_i is "the embedding of item features": item, category and shop embeddings.
* The pairwise loss (Equation 2) sums over triplets (u, i, j); we average over the
  pairs formed inside a mini-batch (same user, or same session, different labels),
  so alpha weighs two means and does not depend on the batch size. For conversion
  and cart, pairs are formed among clicked impressions only, as their point loss is.
* The general model reads the super scenario's features plus the scenario id; the
  heterogeneous scenarios' own features belong to their students (SAMD).

Knowledge output (Equation 4): K(u, i) = [K_u, K_i, K_ui^clk, K_ui^cv, K_ui^cart], of
width `KeepConfig.knowledge_width()`.

Example:
    config = KeepConfig()
    model = KeepModel(config, vocab_sizes={"user_id": 1000, ...})
    out = model(features)  # {"click", "conversion", "cart", "knowledge"}
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence, Tuple

import tensorflow as tf
import tf_keras

from models.configs import DROPOUT, EMBEDDING_DIM, LEARNING_RATE, Choice, FromDict
from models.multitask import TASKS, MultiTaskSteps, pointwise_loss  # noqa: F401 (TASKS re-exported)


@dataclasses.dataclass(frozen=True)
class KeepConfig(FromDict):
    user_embedding_dim: int = 48  # paper: 48 for the user id
    embedding_dim: int = 16  # paper: 16 for every other feature
    tower_units: Tuple[int, ...] = (256, 128, 64)  # paper: (512, 256, 128, 64); last = K_ui width
    attention_units: Tuple[int, ...] = (64, 32)  # DIN activation unit
    pairwise_alpha: float = 0.25  # paper: 0.25 (Equation 3)
    pair_key: str = "user_id"  # "user_id" or F.SESSION_KEY: which rows may form pairs
    learning_rate: float = 3e-3  # paper: Adam 0.001, at batch 2000; 3e-3 here (bench/results/learning_rate.json)
    batch_size: int = 512  # paper: 2000
    dropout: float = 0.0
    # Features the general model reads (transformed names).
    id_features: Tuple[str, ...] = (
        "user_id", "item_id", "category_id", "shop_id", "scenario_id", "user_gender", "user_age_bucket", "hour",
    )
    numeric_features: Tuple[str, ...] = ("item_price",)
    item_features: Tuple[str, ...] = ("item_id", "category_id", "shop_id")  # K_i
    sequence_features: Tuple[Tuple[str, str], ...] = (("hist_item_ids", "item_id"), ("hist_category_ids", "category_id"))

    def embedding_dim_of(self, name: str) -> int:
        return self.user_embedding_dim if name == "user_id" else self.embedding_dim

    def knowledge_width(self) -> int:
        k_i = sum(self.embedding_dim_of(n) for n in self.item_features)
        return self.user_embedding_dim + k_i + len(TASKS) * self.tower_units[-1]


class TargetAttention(tf_keras.layers.Layer):
    """DIN activation unit: the candidate attends over the behaviour sequence.

    weight_t = MLP([q, k_t, q - k_t, q * k_t]); output = sum_t weight_t * k_t over the
    non-padded positions (DIN keeps the weights unnormalised, so the pooled vector
    also carries how much of the history matches). Padding gets weight 0.

    Example:
        att = TargetAttention(units=(64, 32))
        pooled = att(query, keys, mask)  # [B, D], [B, L, D], [B, L] -> [B, D]
    """

    def __init__(self, units: Sequence[int] = (64, 32), **kwargs):
        super().__init__(**kwargs)
        self.units = tuple(units)
        self.hidden = [tf_keras.layers.Dense(u, activation="sigmoid") for u in self.units]
        self.score = tf_keras.layers.Dense(1)

    def call(self, query, keys, mask):
        length = tf.shape(keys)[1]
        q = tf.tile(query[:, None, :], [1, length, 1])
        h = tf.concat([q, keys, q - keys, q * keys], axis=-1)
        for layer in self.hidden:
            h = layer(h)
        weights = tf.squeeze(self.score(h), -1) * tf.cast(mask, keys.dtype)
        return tf.einsum("bl,bld->bd", weights, keys)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class TaskTower(tf_keras.layers.Layer):
    """A task's private MLP; returns (logit, every hidden layer's output).

    The last hidden output is the task's K_ui (the layer before the logit).
    """

    def __init__(self, units: Sequence[int], dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.units = tuple(units)
        self.dropout = dropout
        self.hidden = [tf_keras.layers.Dense(u, activation="relu") for u in self.units]
        self.drop = tf_keras.layers.Dropout(dropout)
        self.logit = tf_keras.layers.Dense(1)

    def call(self, x, training=None):
        hidden = []
        for layer in self.hidden:
            x = self.drop(layer(x), training=training)
            hidden.append(x)
        return tf.squeeze(self.logit(x), -1), hidden

    def get_config(self):
        return {**super().get_config(), "units": self.units, "dropout": self.dropout}


def pairwise_logistic_loss(labels, logits, groups, population=None):
    """Equation 2: mean of log(1 + exp(-(s_i - s_j))) over in-batch pairs.

    A pair (i, j) has the same group (user or session), label_i = 1 and label_j = 0,
    both rows in the population. Returns 0 when the batch holds no pair.
    """
    labels = tf.cast(labels, tf.float32)
    pop = tf.ones_like(labels) if population is None else tf.cast(population, tf.float32)
    same = tf.cast(tf.equal(groups[:, None], groups[None, :]), tf.float32)
    pos = (labels * pop)[:, None]
    neg = ((1.0 - labels) * pop)[None, :]
    pair = same * pos * neg
    diff = logits[:, None] - logits[None, :]
    return tf.math.divide_no_nan(tf.reduce_sum(tf.nn.softplus(-diff) * pair), tf.reduce_sum(pair))


class KeepModel(MultiTaskSteps, tf_keras.Model):
    """The KEEP general model: shared embeddings, target attention, three task towers.

    `call` takes transformed features and returns per-task probabilities, per-task
    logits and the knowledge vector K(u, i). `teacher_layers` returns the intermediate
    representations that SAMD distils from.
    """

    CONFIG_CLASS = KeepConfig
    # The Tuner's: rate, width, dropout, and the weight of the pairwise term of the hybrid loss.
    SEARCH_SPACE = {"learning_rate": LEARNING_RATE, "embedding_dim": EMBEDDING_DIM, "dropout": DROPOUT,
                    "pairwise_alpha": Choice(0.1, 0.25, 0.5, 1.0)}

    def __init__(self, config: KeepConfig, vocab_sizes: Mapping[str, int], **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.vocab_sizes = dict(vocab_sizes)
        self.embeddings = {
            name: tf_keras.layers.Embedding(
                self.vocab_sizes[name], config.embedding_dim_of(name), name=f"embedding_{name}"
            )
            for name in config.id_features
        }
        self.attention = TargetAttention(config.attention_units, name="target_attention")
        self.towers = {t: TaskTower(config.tower_units, config.dropout, name=f"tower_{t}") for t in TASKS}
        self.loss_tracker = tf_keras.metrics.Mean(name="loss")
        self.auc = {t: tf_keras.metrics.AUC(name=f"auc_{t}") for t in TASKS}

    def _embed(self, features):
        emb = {name: self.embeddings[name](features[name]) for name in self.config.id_features}
        seq_parts, query_parts, mask = [], [], None
        for seq_name, target in self.config.sequence_features:
            ids = features[seq_name]
            seq_parts.append(self.embeddings[target](ids))
            query_parts.append(emb[target])
            mask = ids > 0 if mask is None else mask | (ids > 0)
        parts = [emb[n] for n in self.config.id_features]
        parts += [tf.reshape(tf.cast(features[n], tf.float32), [-1, 1]) for n in self.config.numeric_features]
        if seq_parts:
            pooled = self.attention(tf.concat(query_parts, -1), tf.concat(seq_parts, -1), mask)
            parts.append(pooled)
        return emb, tf.concat(parts, axis=-1)

    def teacher_layers(self, features, training=None, tasks=TASKS):
        """Intermediate layers, bottom to top: the shared bottom, then the hidden layers of `tasks`' towers."""
        _, bottom = self._embed(features)
        layers = [bottom]
        for t in tasks:
            _, hidden = self.towers[t](bottom, training=training)
            layers.extend(hidden)
        return layers

    def call(self, features, training=None):
        emb, bottom = self._embed(features)
        logits, k_ui = {}, []
        for t in TASKS:
            logits[t], hidden = self.towers[t](bottom, training=training)
            k_ui.append(hidden[-1])
        k_u = emb["user_id"]
        k_i = tf.concat([emb[n] for n in self.config.item_features], -1)
        out = {t: tf.sigmoid(logits[t]) for t in TASKS}
        out.update({f"{t}_logit": logits[t] for t in TASKS})
        out["knowledge"] = tf.concat([k_u, k_i] + k_ui, axis=-1)  # Equation 4
        return out

    def task_loss(self, features, outputs, task, weights):
        labels, logits = tf.cast(features[task], tf.float32), outputs[f"{task}_logit"]
        point = pointwise_loss(labels, logits, weights)  # Equation 1
        pair = pairwise_logistic_loss(labels, logits, features[self.config.pair_key], weights)  # Equation 2
        return point + self.config.pairwise_alpha * pair  # Equation 3
