"""ADL: Adaptive Distribution Learning for multi-scenario, multi-task prediction.

Paper: "ADL: Adaptive Distribution Learning Framework for Multi-Scenario CTR
Prediction" (SIGIR '23), section 2. The scenario id is not used to pick a network
here. Instead the model clusters the samples and learns one network per cluster:

* distribution adaptation (section 2.3): the DLM dynamic routing of Algorithm 1.
  It takes the cosine similarity between a sample's representation and K unit
  distribution centres (Equation 1), applies a softmax to get the coefficients r_ij
  (Equation 2), runs I iterations that re-estimate the centres from the batch
  (Equations 3-4), then takes an EWMA with the previous batch's centres (Equation 5).
  No gradient flows through the routing, and each sample goes to its argmax cluster;
* input-aware distribution modelling: the routing input is either the user-side
  features (`routing_input="user"`, user-wise distributions: user profile, user id
  and behaviour histories) or every feature (`"instance"`, instance-wise);
* multi-distribution network (section 2.4): every layer has a shared kernel W_s and
  K cluster kernels W_j. A sample routed to cluster j uses W_m = W_s ⊗ W_j
  (Equation 6), so W_j is trained only by the samples routed to j.

Readings of the paper:
* Cosine similarity. Equation 1 writes s_ij = |c_j||e_i| cos θ = c_j · e_i and calls
  it a cosine; with unit centres that is a cosine only when |e_i| = 1, so we
  L2-normalise e_i. We also divide by a temperature (`routing_temperature`, default
  0.1); the paper has none, i.e. 1.0. Cosines lie in [-1, 1], and at temperature 1
  the softmax over K is nearly flat. Every centre then becomes close to the batch
  mean, and the symmetric point is stable: on a 6-component mixture the 4 centres
  reached a pairwise cosine of 1.0000 after 500 batches. At 0.1 they stay apart
  (the lowest pairwise cosine was -0.16). In the paper, the norm of the un-normalised
  e_i may have played this role.
* What routing returns. In training, Algorithm 1 returns the coefficients of its last
  iteration (line 4, computed with the batch-adapted centres). The samples are
  routed by these, and the EWMA'd centres (line 7) are stored. At inference
  ("the cluster center vectors are inherited and utilized") the stored centres are
  frozen: r_ij = softmax(cos(c_j, e_i) / T), with no iteration and no update.
* Iterations I = 3 and β = 0.9 (section 3.1.3). The centres start as normalised
  Gaussian vectors (Algorithm 1's input). A centre whose batch-weighted sum
  vanishes keeps its inherited value, so the centres stay unit-norm.
* The centres are non-trainable weights: checkpoints and SavedModels carry them.
  They change only in a call with `training=True`. With a mirrored strategy the
  first replica's centres are kept, because a mean of unit vectors is not unit-norm.
* Bias. Equation 6 covers the weights only. The bias is b_s + b_j (the additive
  reading used by STAR, the paper's reference [17] for this structure). W_j starts
  at ones and b_j at zeros, so every cluster starts at the shared network.
* Multi-task. The paper predicts one CTR with a multi-distribution DNN ending in
  sigmoid(W_m^T x) (Equation 7). We keep every layer multi-distribution: a
  multi-distribution shared bottom (`bottom_units`), then per task (click,
  conversion, cart) a multi-distribution tower (`tower_units`) ending in a
  multi-distribution logit. All tasks share one routing. As in KEEP, conversion and
  cart are trained only on clicked rows (Equation 8 per task, summed).
* Sizes. The paper's MLP is 512-256-128-64-32 with K = 3 or 9. The defaults here,
  bottom (128, 64), towers (32,) and K = 4, fit the synthetic data.
* Features. These are KEEP's general-model features. The histories are mean-pooled
  (the paper drops attention modules, section 3.1.3). They share the item and
  category embedding tables with the target, keyed by `models.features.VOCABULARY`.
  The user-wise input is `user_features`. Numerics enter the routing input
  unscaled. At initialisation a z-scored price (about 1) outweighs the embeddings
  (about 0.05), so instance-wise routing starts close to a split on the price sign
  and changes as the embeddings grow.

Example:
    config = ADLConfig(num_clusters=4, routing_input="user")
    model = AdlModel(config, vocab_sizes={t: size for t in config.embedding_tables()})
    model.compile(optimizer=tf_keras.optimizers.Adam(config.learning_rate))
    model.fit(dataset)                       # routes, trains, moves the centres
    out = model(features)                    # {"click", ..., "click_logit", ..., "cluster"}
    clusters = model.cluster_assignment(features)   # [B] int64, frozen centres
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Mapping, Optional, Sequence, Tuple

import tensorflow as tf
import tf_keras

from models import features as F
from models.keep import TASK_POPULATION, TASKS, pointwise_loss
from models.multitask import MultiTaskSteps

ROUTING_INPUTS = ("user", "instance")


@dataclasses.dataclass(frozen=True)
class ADLConfig:
    num_clusters: int = 4  # K (paper: 3 industrial, 9 public)
    routing_iterations: int = 3  # I (paper: 3)
    ewma_beta: float = 0.9  # β of Equation 5 (paper: 0.9)
    routing_temperature: float = 0.1  # softmax temperature of Equation 2 (paper: none, i.e. 1.0; see docstring)
    routing_input: str = "instance"  # "user" (user-wise) or "instance" (all features)
    bottom_units: Tuple[int, ...] = (128, 64)  # multi-distribution shared bottom
    tower_units: Tuple[int, ...] = (32,)  # multi-distribution task towers (a logit layer follows)
    embedding_dim: int = 16
    learning_rate: float = 1e-3  # paper: Adam, 1e-3
    batch_size: int = 512  # paper: 2048
    dropout: float = 0.0
    id_features: Tuple[str, ...] = (
        "user_id", "item_id", "category_id", "shop_id", "scenario_id", "user_gender", "user_age_bucket", "hour",
    )
    numeric_features: Tuple[str, ...] = ("item_price",) + F.DOMAIN_STATISTICS  # equal inputs across models
    sequence_features: Tuple[str, ...] = ("hist_item_ids", "hist_category_ids")  # mean-pooled
    # The user-wise routing input: user profile, user id and behaviour histories.
    user_features: Tuple[str, ...] = ("user_id", "user_gender", "user_age_bucket", "hist_item_ids",
                                      "hist_category_ids")

    def __post_init__(self):
        if self.routing_input not in ROUTING_INPUTS:
            raise ValueError(f"unknown routing_input {self.routing_input!r}; one of {ROUTING_INPUTS}")
        if self.num_clusters < 1 or self.routing_iterations < 1:
            raise ValueError("num_clusters and routing_iterations must be >= 1")
        if not 0.0 <= self.ewma_beta < 1.0 or self.routing_temperature <= 0.0:
            raise ValueError("ewma_beta must be in [0, 1) and routing_temperature > 0")
        unknown = set(self.user_features) - set(self.feature_names())
        if unknown or (self.routing_input == "user" and not self.user_features):
            raise ValueError(f"user_features must be a non-empty subset of the model's features; got {unknown}")

    def feature_names(self) -> Tuple[str, ...]:
        """Every input feature, in the order the representation concatenates them."""
        return self.id_features + self.numeric_features + self.sequence_features

    def routing_features(self) -> Tuple[str, ...]:
        keep = set(self.user_features) if self.routing_input == "user" else set(self.feature_names())
        return tuple(n for n in self.feature_names() if n in keep)

    def embedding_tables(self) -> Tuple[str, ...]:
        """Embedding tables (= keys of `vocab_sizes`): a history shares its target's table."""
        names = self.id_features + self.sequence_features
        return tuple(dict.fromkeys(F.VOCABULARY.get(n, n) for n in names))

    @classmethod
    def from_dict(cls, overrides: Optional[Mapping] = None) -> "ADLConfig":
        overrides = dict(overrides or {})
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown ADLConfig field(s): {sorted(unknown)}")
        for k, v in list(overrides.items()):
            if isinstance(v, list):
                overrides[k] = tuple(v)
        return cls(**overrides)


class UnitGaussian(tf_keras.initializers.Initializer):
    """Rows drawn from N(0, 1), then L2-normalised (Algorithm 1's initial centres)."""

    def __init__(self, seed=None):
        self.seed = seed

    def __call__(self, shape, dtype=None, **kwargs):
        x = tf.random.stateless_normal(shape, [self.seed, 0], dtype=dtype or tf.float32) if self.seed is not None \
            else tf.random.normal(shape, dtype=dtype or tf.float32)
        return tf.math.l2_normalize(x, axis=-1)

    def get_config(self):
        return {"seed": self.seed}


class DistributionRouting(tf_keras.layers.Layer):
    """DLM dynamic routing (Algorithm 1). Maps [B, D] representations to [B, K] coefficients.

    `centres` ([K, D], unit rows) is a non-trainable weight. A call with
    `training=True` runs I routing iterations from the stored centres and stores the
    EWMA of the result. Any other call uses the stored centres and leaves them as
    they are. The coefficients never carry a gradient.

    Example:
        routing = DistributionRouting(num_clusters=4)
        r = routing(e, training=True)      # [B, 4]; the centres move
        cluster = tf.argmax(r, axis=-1)
    """

    def __init__(self, num_clusters: int = 4, iterations: int = 3, beta: float = 0.9, temperature: float = 0.1,
                 seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self.num_clusters = num_clusters
        self.iterations = iterations
        self.beta = beta
        self.temperature = temperature
        self.seed = seed

    def build(self, input_shape):
        self.centres = self.add_weight(
            "centres",
            shape=(self.num_clusters, int(input_shape[-1])),
            initializer=UnitGaussian(self.seed),
            trainable=False,
            # A mean over replicas of unit vectors would not be unit-norm.
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
        super().build(input_shape)

    def _coefficients(self, e, centres):
        s = tf.matmul(e, centres, transpose_b=True) / self.temperature  # Eq. 1 (unit e and c: cosine)
        return tf.nn.softmax(s, axis=-1)  # Eq. 2

    def call(self, inputs, training=None):
        # Routing is a clustering step. Gradients from it would pull the embeddings
        # towards the centres (Figure 1's crossed-out line).
        e = tf.math.l2_normalize(tf.stop_gradient(tf.cast(inputs, tf.float32)), axis=-1)
        inherited = tf.convert_to_tensor(self.centres)  # Algorithm 1, line 1
        if not training:
            return tf.stop_gradient(self._coefficients(e, inherited))
        centres = inherited
        for _ in range(self.iterations):
            r = self._coefficients(e, centres)  # lines 3-4
            summed = tf.matmul(r, e, transpose_a=True)
            ok = tf.norm(summed, axis=-1, keepdims=True) > 1e-12
            centres = tf.where(ok, tf.math.l2_normalize(summed, axis=-1), centres)  # Eq. 3-4 (line 5)
        mixed = self.beta * inherited + (1.0 - self.beta) * centres
        ok = tf.norm(mixed, axis=-1, keepdims=True) > 1e-12
        self.centres.assign(tf.where(ok, tf.math.l2_normalize(mixed, axis=-1), inherited))  # Eq. 5 (line 7)
        return tf.stop_gradient(r)  # line 8

    def get_config(self):
        return {**super().get_config(), "num_clusters": self.num_clusters, "iterations": self.iterations,
                "beta": self.beta, "temperature": self.temperature, "seed": self.seed}


class MultiDistributionDense(tf_keras.layers.Layer):
    """A dense layer whose kernel for a sample of cluster j is W_s ⊗ W_j (Equation 6).

    Every cluster's output is computed, and each sample keeps its own cluster's through
    a one-hot mask. An unrouted cluster's output is multiplied by an exact 0, so its
    W_j and b_j get an exact zero gradient. For small K this is cheaper than gathering
    a [B, in, out] kernel per sample.

    Example:
        dense = MultiDistributionDense(64, num_clusters=4, activation="relu")
        y = dense(x, cluster)   # x [B, in], cluster [B] int -> [B, 64]
    """

    def __init__(self, units: int, num_clusters: int, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.num_clusters = num_clusters
        self.activation = tf_keras.activations.get(activation)

    def build(self, input_shape):
        d = int(input_shape[-1])
        k = self.num_clusters
        self.shared_kernel = self.add_weight("shared_kernel", shape=(d, self.units), initializer="glorot_uniform")
        self.shared_bias = self.add_weight("shared_bias", shape=(self.units,), initializer="zeros")
        # Starting at ones (and zeros), each cluster starts at the shared network.
        self.cluster_kernel = self.add_weight("cluster_kernel", shape=(k, d, self.units), initializer="ones")
        self.cluster_bias = self.add_weight("cluster_bias", shape=(k, self.units), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs, cluster):
        kernels = self.shared_kernel[None] * self.cluster_kernel  # Eq. 6: W_m = W_s ⊗ W_j
        biases = self.shared_bias[None] + self.cluster_bias
        per_cluster = tf.einsum("bi,kio->bko", inputs, kernels) + biases[None]
        mask = tf.one_hot(cluster, self.num_clusters, dtype=per_cluster.dtype)
        return self.activation(tf.einsum("bko,bk->bo", per_cluster, mask))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "num_clusters": self.num_clusters,
                "activation": tf_keras.activations.serialize(self.activation)}


class MultiDistributionMLP(tf_keras.layers.Layer):
    """A stack of `MultiDistributionDense` layers, ReLU between them. `linear_output`
    leaves the last layer without activation or dropout (a logit layer)."""

    def __init__(self, units: Sequence[int], num_clusters: int, dropout: float = 0.0, linear_output: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        self.units = tuple(units)
        self.num_clusters = num_clusters
        self.dropout = dropout
        self.linear_output = linear_output
        last = len(self.units) - 1
        self.dense = [
            MultiDistributionDense(u, num_clusters, None if (linear_output and i == last) else "relu",
                                   name=f"md_dense_{i}")
            for i, u in enumerate(self.units)
        ]
        self.drop = tf_keras.layers.Dropout(dropout)

    def call(self, x, cluster, training=None):
        for i, layer in enumerate(self.dense):
            x = layer(x, cluster)
            if not (self.linear_output and i == len(self.dense) - 1):
                x = self.drop(x, training=training)
        return x

    def get_config(self):
        return {**super().get_config(), "units": self.units, "num_clusters": self.num_clusters,
                "dropout": self.dropout, "linear_output": self.linear_output}


class AdlModel(MultiTaskSteps, tf_keras.Model):
    """ADL: the routing picks each sample's cluster, then a multi-distribution bottom
    and towers serve all clusters.

    `call(features)` returns per-task probabilities, `<task>_logit` logits and
    `cluster` (each sample's cluster index, int64).
    """

    CONFIG_CLASS = ADLConfig

    def __init__(self, config: ADLConfig, vocab_sizes: Mapping[str, int], **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.vocab_sizes = dict(vocab_sizes)
        self.embeddings = {
            table: tf_keras.layers.Embedding(self.vocab_sizes[table], config.embedding_dim, name=f"embedding_{table}")
            for table in config.embedding_tables()
        }
        self.routing = DistributionRouting(config.num_clusters, config.routing_iterations, config.ewma_beta,
                                           config.routing_temperature, name="distribution_routing")
        self.bottom = MultiDistributionMLP(config.bottom_units, config.num_clusters, config.dropout, name="md_bottom")
        self.towers = {
            t: MultiDistributionMLP(config.tower_units + (1,), config.num_clusters, config.dropout,
                                    linear_output=True, name=f"md_tower_{t}")
            for t in TASKS
        }
        self.loss_tracker = tf_keras.metrics.Mean(name="loss")
        self.auc = {t: tf_keras.metrics.AUC(name=f"auc_{t}") for t in TASKS}

    def _table(self, name):
        return self.embeddings[F.VOCABULARY.get(name, name)]

    def _parts(self, features) -> Dict[str, tf.Tensor]:
        """One [B, d] block per feature."""
        parts = {n: self._table(n)(features[n]) for n in self.config.id_features}
        for n in self.config.numeric_features:
            parts[n] = tf.reshape(tf.cast(features[n], tf.float32), [-1, 1])
        for n in self.config.sequence_features:
            ids = features[n]
            mask = tf.cast(ids > 0, tf.float32)[..., None]
            summed = tf.reduce_sum(self._table(n)(ids) * mask, axis=1)
            parts[n] = tf.math.divide_no_nan(summed, tf.reduce_sum(mask, axis=1))  # empty history -> 0
        return parts

    def _representations(self, features):
        parts = self._parts(features)
        x = tf.concat([parts[n] for n in self.config.feature_names()], axis=-1)
        e = tf.concat([parts[n] for n in self.config.routing_features()], axis=-1)
        return x, e

    def routing_representation(self, features):
        """e_i: the routing input (user-side or all features), before normalisation."""
        return self._representations(features)[1]

    def distribution_coefficients(self, features):
        """r_ij from the stored (frozen) centres: [B, K], no gradient."""
        return self.routing(self.routing_representation(features), training=False)

    def cluster_assignment(self, features):
        """Each sample's cluster index ([B] int64), as routed at inference."""
        return tf.argmax(self.distribution_coefficients(features), axis=-1)

    def call(self, features, training=None):
        x, e = self._representations(features)
        cluster = tf.argmax(self.routing(e, training=training), axis=-1)  # hard routing to the argmax cluster
        h = self.bottom(x, cluster, training=training)
        logits = {t: tf.squeeze(self.towers[t](h, cluster, training=training), -1) for t in TASKS}
        out = {t: tf.sigmoid(logits[t]) for t in TASKS}  # Eq. 7
        out.update({f"{t}_logit": logits[t] for t in TASKS})
        out["cluster"] = cluster
        return out

    def compute_losses(self, features, outputs):
        total = 0.0
        for t in TASKS:
            gate = TASK_POPULATION[t]
            pop = None if gate is None else tf.cast(features[gate], tf.float32)
            total += pointwise_loss(tf.cast(features[t], tf.float32), outputs[f"{t}_logit"], pop)  # Eq. 8
        return total + tf.add_n(self.losses) if self.losses else total
