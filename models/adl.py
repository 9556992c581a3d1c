"""ADL: Adaptive Distribution Learning for multi-scenario, multi-task prediction.

Paper: "ADL: Adaptive Distribution Learning Framework for Multi-Scenario CTR
Prediction" (SIGIR '23), section 2. The scenario id is not used to pick a network
here. Instead the model clusters the samples and learns one network per cluster:

* distribution adaptation (section 2.3): the DLM dynamic routing of Algorithm 1.
  It takes the cosine similarity between a sample's representation and K unit
  distribution centres (Equation 1) and applies a softmax to get the coefficients
  r_ij (Equation 2). In training it then runs I iterations that re-estimate the
  centres from the batch (Equations 3-4) and takes an EWMA with the previous
  batch's centres (Equation 5). No gradient flows through the routing, and each
  sample goes to its argmax cluster;
* input-aware distribution modelling: the routing input is the scenario-bearing
  features (`routing_input="scenario"`, the default), the user-side features
  (`"user"`, user-wise distributions) or every feature (`"instance"`, instance-wise);
* multi-distribution network (section 2.4): every layer has a shared kernel W_s and
  K cluster kernels W_j. A sample routed to cluster j uses W_m = W_s ⊗ W_j
  (Equation 6), so W_j is trained only by the samples routed to j. The batch is
  partitioned by cluster once, and each part runs through its own cluster's
  network only: the cost is one network's, not K.

Readings of the paper:
* Which centres route a sample. Algorithm 1, line 1, inherits the previous batch's
  centres c^{b-1}; lines 2-6 iterate on the batch, and section 2.3 ends with "after
  training, the cluster center vectors are inherited and utilized" at inference. We
  route every sample, in training and at serving alike, by the inherited (stored)
  centres: r_ij = softmax(cos(c_j^{b-1}, e_i) / T). The iterations and the EWMA only
  move the stored centres. Routing training samples by the last iteration's
  batch-fitted centres (a literal reading of line 8) trains a sample in one cluster
  that serving, with no iterations, may send to another, as it did for a sizeable
  share of each batch.
* Cosine similarity. Equation 1 writes s_ij = |c_j||e_i| cos θ = c_j · e_i and calls
  it a cosine; with unit centres that is a cosine only when |e_i| = 1, so we
  L2-normalise e_i. We also divide by a temperature (`routing_temperature`, default
  0.1); the paper has none, i.e. 1.0. Cosines lie in [-1, 1], and at temperature 1
  the softmax over K is nearly flat, so every centre is refitted to about the batch
  mean and the centres collapse together. The temperature only shapes the centre
  updates: the routing is the argmax, which no temperature changes.
* Routing input, per field. The routing input concatenates one block per feature,
  each brought to a common scale before the concatenation is L2-normalised: an id
  or history embedding is L2-normalised to a unit block, a numeric feature (z-scored
  upstream) enters as tanh(x), in [-1, 1]. Unscaled, a z-scored price (of order one)
  outweighed id embeddings initialised near zero, so the normalised vector was mostly
  the price: early in training the centres became antipodal duplicate pairs, a split
  on the price sign. Per field, no feature outweighs another.
* Default routing input: the scenario-bearing features. The paper feeds either the
  user-related features (user-wise) or every feature (instance-wise, section 2.3);
  its public data set is split into scenarios by the scenario indicator and user
  attributes (section 3.1.1). We default to `scenario_features`: the scenario id, the
  user profile (gender, age bucket) and the per-scenario exposure statistics. With
  every feature (`"instance"`), the user, item and shop id blocks are, per sample,
  near-random unit vectors that add noise to the few blocks that carry a
  distribution. The quality benchmark does not tell the two apart, and with either
  the heterogeneous scenarios (live_stream, payment_page) get a cluster of their own
  (docs/benchmarks.md, quality findings). The other two readings stay available.
* Empty and duplicate centres. A centre is reseeded after the EWMA when it is a
  duplicate (cosine above `duplicate_cosine`, 0.99, with a lower-numbered centre) or
  empty (its EWMA share of the batch's samples, with the same β, fell below
  `min_cluster_share`, 0.01). It is reseeded at the batch's worst-fitted sample (the
  lowest cosine to its nearest centre; the next worst for a second one), as k-means
  does, and its share restarts at 1/K. The paper has no such rule; without it a
  collapsed or starved centre stays so.
* Iterations I = 3 and β = 0.9 (section 3.1.3). The centres start as normalised
  Gaussian vectors (Algorithm 1's input). A centre whose batch-weighted sum
  vanishes keeps its inherited value, so the centres stay unit-norm.
* The centres (and the cluster shares) are non-trainable weights: checkpoints and
  SavedModels carry them. They change only in a call with `training=True`. With a
  mirrored strategy the first replica's are kept, because a mean of unit vectors is
  not unit-norm.
* Initialisation and step size of Equation 6's factors (the paper gives neither).
  W_s is Glorot-uniform with bound a = √(6 / (fan_in + fan_out)) and every W_j
  starts at ones, so every cluster starts at the shared network. Adam moves a
  weight by about its learning rate per step whatever its scale. Stored plainly,
  a step on W_j moved W_m by only |W_s| times that, an order of magnitude less than
  a step on W_s: the clusters barely differed after a whole training run. So W_j is
  stored times a (`cluster_kernel` = a·W_j): a step then moves W_m by |W_s|/a ≤ 1
  times the learning rate, as a step on W_s does. On the quality benchmark this
  beat both W_j stored plainly and both factors started at √a (balanced, but the
  whole network then learns at about half the rate); docs/benchmarks.md, quality
  findings.
* Bias. Equation 6 covers the weights only. The bias is b_s + b_j (the additive
  reading used by STAR, the paper's reference [17] for this structure); both start
  at zero.
* Multi-task. The paper predicts one CTR with a multi-distribution DNN ending in
  sigmoid(W_m^T x) (Equation 7). We keep every layer multi-distribution: a
  multi-distribution shared bottom (`bottom_units`), then per task (click,
  conversion, cart) a multi-distribution tower (`tower_units`) ending in a
  multi-distribution logit. All tasks share one routing. As in KEEP, conversion and
  cart are trained only on clicked rows (Equation 8 per task, summed).
* Sizes. The paper's MLP is 512-256-128-64-32 with K = 3 (industrial) or 9 (public).
  K = 3 here; bottom (128, 64) and towers (32,) are the baselines' sizes for the
  synthetic data. Batch 512 (the pipeline's equal budget; paper 2048).
* Features. These are KEEP's general-model features. The histories are mean-pooled
  (the paper drops attention modules, section 3.1.3). They share the item and
  category embedding tables with the target, keyed by `models.features.VOCABULARY`.
  The network input takes every feature unscaled, as the baselines do; only the
  routing input is scaled per field.

What the benchmarks found (docs/benchmarks.md, sections quality and adl_speed):
* ADL is above the shared bottom and MMoE on click AUC but below the
  logistic-regression floor. In the K sweep (Figure 3) K = 1, no routing at all, does
  as well as more clusters: the gain over the shared bottom comes from Equation 6's
  parameterisation (W_j's step size above), not from the clusters; on this data the
  routing neither helps nor hurts.
* Speed. At these small layers the K per-cluster matmuls, the partition and the
  routing's few dozen ops cost in op dispatch, not in arithmetic, and Equation 6
  holds K + 1 kernels per layer that the optimizer updates every step: each
  mechanism costs about a tenth of the shared bottom's step rate
  (`bench.adl speed --decompose`). Through the Trainer's input pipeline
  (`bench.adl pipeline-speed`) no difference shows: input decoding dominates and
  varies by more than the model step. The paper's speed claim (section 3.5, Table 2)
  is against models with a network per scenario, P x M parameters, against ADL's
  P x (K + 1); against that structure (STAR's, `star_m8` in `bench.adl speed`) ADL
  trains faster, as claimed, but not against our shared bottom, which has one
  network (P). Fused task towers, TF's fused Adam kernel and a padded batched matmul
  over the clusters were tried and dropped.

Example:
    config = ADLConfig(num_clusters=3, routing_input="scenario")
    model = AdlModel(config, vocab_sizes={t: size for t in config.embedding_tables()})
    model.compile(optimizer=tf_keras.optimizers.Adam(config.learning_rate))
    model.fit(dataset)                       # routes, trains, moves the centres
    out = model(features)                    # {"click", ..., "click_logit", ..., "cluster"}
    clusters = model.cluster_assignment(features)   # [B] int64, frozen centres
    report = routing_report(model, features)        # train-vs-serve agreement, sizes per scenario
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from models import features as F
from models.configs import DROPOUT, EMBEDDING_DIM, LEARNING_RATE, Choice, FromDict
from models.multitask import TASKS, MultiTaskSteps

ROUTING_INPUTS = ("scenario", "user", "instance")


@dataclasses.dataclass(frozen=True)
class ADLConfig(FromDict):
    num_clusters: int = 3  # K (paper: 3 industrial, 9 public)
    routing_iterations: int = 3  # I (paper: 3)
    ewma_beta: float = 0.9  # β of Equation 5 (paper: 0.9)
    routing_temperature: float = 0.1  # softmax temperature of Equation 2 (paper: none, i.e. 1.0; see docstring)
    routing_input: str = "scenario"  # "scenario", "user" (user-wise) or "instance" (all features)
    duplicate_cosine: float = 0.99  # reseed a centre this close to a lower-numbered one; > 1: never (paper: no rule)
    min_cluster_share: float = 0.01  # a centre whose EWMA share of samples falls below is reseeded
    bottom_units: Tuple[int, ...] = (128, 64)  # multi-distribution shared bottom
    tower_units: Tuple[int, ...] = (32,)  # multi-distribution task towers (a logit layer follows)
    embedding_dim: int = 16
    learning_rate: float = 3e-3  # paper: Adam 1e-3; 3e-3 here (bench/results/learning_rate.json)
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
    # The scenario-bearing routing input: scenario id, user profile, exposure statistics.
    scenario_features: Tuple[str, ...] = ("scenario_id", "user_gender", "user_age_bucket") + F.DOMAIN_STATISTICS

    def __post_init__(self):
        if self.routing_input not in ROUTING_INPUTS:
            raise ValueError(f"unknown routing_input {self.routing_input!r}; one of {ROUTING_INPUTS}")
        if self.num_clusters < 1 or self.routing_iterations < 1:
            raise ValueError("num_clusters and routing_iterations must be >= 1")
        if not 0.0 <= self.ewma_beta < 1.0 or self.routing_temperature <= 0.0:
            raise ValueError("ewma_beta must be in [0, 1) and routing_temperature > 0")
        if not 0.0 <= self.min_cluster_share < 1.0 / self.num_clusters or self.duplicate_cosine <= -1.0:
            raise ValueError("min_cluster_share must be in [0, 1/K) and duplicate_cosine > -1")
        for name in ("user_features", "scenario_features"):
            chosen = getattr(self, name)
            unknown = set(chosen) - set(self.feature_names())
            if unknown or (self.routing_input == name.split("_")[0] and not chosen):
                raise ValueError(f"{name} must be a non-empty subset of the model's features; got {unknown}")

    def feature_names(self) -> Tuple[str, ...]:
        """Every input feature, in the order the representation concatenates them."""
        return self.id_features + self.numeric_features + self.sequence_features

    def routing_features(self) -> Tuple[str, ...]:
        keep = {"user": set(self.user_features), "scenario": set(self.scenario_features),
                "instance": set(self.feature_names())}[self.routing_input]
        return tuple(n for n in self.feature_names() if n in keep)

    def embedding_tables(self) -> Tuple[str, ...]:
        """Embedding tables (= keys of `vocab_sizes`): a history shares its target's table."""
        names = self.id_features + self.sequence_features
        return tuple(dict.fromkeys(F.VOCABULARY.get(n, n) for n in names))


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

    The coefficients always come from the stored centres (`centres`, [K, D], unit
    rows, non-trainable), so training and serving route alike. A call with
    `training=True` also runs I routing iterations from the stored centres, stores
    the EWMA of the result and reseeds duplicate or empty centres (`shares`, [K],
    tracks each centre's EWMA share of samples). The coefficients never carry a
    gradient.

    Args:
        num_clusters: K.
        iterations: I, the routing iterations per training batch.
        beta: β of Equation 5, for the centres and the shares.
        temperature: divides the cosines before the softmax (Equation 2).
        duplicate_cosine: a centre with a cosine above this to a lower-numbered one is reseeded.
        min_cluster_share: a centre whose EWMA share falls below this is reseeded.
        seed: seeds the initial centres.

    Example:
        routing = DistributionRouting(num_clusters=4)
        r = routing(e, training=True)      # [B, 4] from the stored centres; the centres then move
        cluster = tf.argmax(r, axis=-1)
    """

    def __init__(self, num_clusters: int = 3, iterations: int = 3, beta: float = 0.9, temperature: float = 0.1,
                 duplicate_cosine: float = 0.99, min_cluster_share: float = 0.01, seed: Optional[int] = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_clusters = num_clusters
        self.iterations = iterations
        self.beta = beta
        self.temperature = temperature
        self.duplicate_cosine = duplicate_cosine
        self.min_cluster_share = min_cluster_share
        self.seed = seed

    def build(self, input_shape):
        k = self.num_clusters
        # A mean over replicas of unit vectors would not be unit-norm: the first replica's are kept.
        self.centres = self.add_weight("centres", shape=(k, int(input_shape[-1])), initializer=UnitGaussian(self.seed),
                                       trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.shares = self.add_weight("shares", shape=(k,), initializer=tf_keras.initializers.Constant(1.0 / k),
                                      trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        super().build(input_shape)

    def coefficients(self, e, centres):
        """r_ij for unit rows e [B, D] and centres [K, D]."""
        return tf.nn.softmax(tf.matmul(e, centres, transpose_b=True) / self.temperature, axis=-1)  # Eq. 1-2

    def fit_centres(self, e, centres):
        """The batch-fitted centres: I iterations of lines 3-5 from `centres`."""
        for _ in range(self.iterations):
            summed = tf.matmul(self.coefficients(e, centres), e, transpose_a=True)
            ok = tf.norm(summed, axis=-1, keepdims=True) > 1e-12
            centres = tf.where(ok, tf.math.l2_normalize(summed, axis=-1), centres)  # Eq. 3-4
        return centres

    def call(self, inputs, training=None):
        # Routing is a clustering step. Gradients from it would pull the embeddings
        # towards the centres (Figure 1's crossed-out line).
        e = tf.math.l2_normalize(tf.stop_gradient(tf.cast(inputs, tf.float32)), axis=-1)
        inherited = tf.convert_to_tensor(self.centres)  # Algorithm 1, line 1
        r = tf.stop_gradient(self.coefficients(e, inherited))
        if training:
            self._update(e, inherited, r)
        return r

    def _update(self, e, inherited, r):
        k = self.num_clusters
        mixed = self.beta * inherited + (1.0 - self.beta) * self.fit_centres(e, inherited)
        ok = tf.norm(mixed, axis=-1, keepdims=True) > 1e-12
        mixed = tf.where(ok, tf.math.l2_normalize(mixed, axis=-1), inherited)  # Eq. 5 (line 7)
        batch_share = tf.reduce_mean(tf.one_hot(tf.argmax(r, axis=-1), k), axis=0)
        shares = self.beta * self.shares + (1.0 - self.beta) * batch_share
        # Reseeding (not in the paper): duplicates of a lower-numbered centre, and starved centres.
        cos = tf.matmul(mixed, mixed, transpose_b=True)
        lower_numbered = tf.linalg.band_part(tf.ones([k, k]), 0, -1) - tf.eye(k) > 0  # [i, j]: i < j
        duplicate = tf.reduce_any((cos > self.duplicate_cosine) & lower_numbered, axis=0)
        reseed = duplicate | (shares < self.min_cluster_share)
        fit = tf.reduce_max(tf.matmul(e, mixed, transpose_b=True), axis=-1)
        worst = tf.math.top_k(-fit, k=tf.minimum(k, tf.shape(e)[0])).indices  # worst-fitted samples first
        rank = tf.minimum(tf.cumsum(tf.cast(reseed, tf.int32)) - 1, tf.shape(worst)[0] - 1)
        seeds = tf.gather(e, tf.gather(worst, tf.maximum(rank, 0)))
        reseed &= tf.norm(seeds, axis=-1) > 0.5  # an all-zero routing input is no centre
        self.centres.assign(tf.where(reseed[:, None], seeds, mixed))
        self.shares.assign(tf.where(reseed, tf.fill([k], 1.0 / k), shares))

    def get_config(self):
        return {**super().get_config(), "num_clusters": self.num_clusters, "iterations": self.iterations,
                "beta": self.beta, "temperature": self.temperature, "duplicate_cosine": self.duplicate_cosine,
                "min_cluster_share": self.min_cluster_share, "seed": self.seed}


def glorot_bound(fan_in: int, fan_out: int) -> float:
    """a = √(6 / (fan_in + fan_out)), Glorot-uniform's bound: W_s's range and the scale W_j is stored at."""
    return math.sqrt(6.0 / (fan_in + fan_out))


class MultiDistributionDense(tf_keras.layers.Layer):
    """A dense layer whose kernel for a sample of cluster j is W_s ⊗ W_j (Equation 6).

    `inputs` is either a list of K tensors, the rows of each cluster (how
    `AdlModel` calls it, on a batch partitioned once), or one [B, in] tensor with
    `cluster` [B] int (partitioned and stitched back here). Either way a row is
    multiplied by its own cluster's kernel only, and an unrouted cluster's W_j and
    b_j get an exact zero gradient.

    W_s (`shared_kernel`) is Glorot-uniform with bound a and every W_j starts at
    ones. W_j is stored times a (`cluster_kernel` = a·W_j), so that an optimizer
    step moves W_m through W_j about as much as through W_s (module docstring).

    Args:
        units: output width.
        num_clusters: K.
        activation: applied to the output.

    Shapes: K x [n_j, in] -> K x [n_j, units]; or [B, in], cluster [B] -> [B, units].

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
        shape = input_shape[0] if isinstance(input_shape, list) else input_shape  # a list: one shape per cluster
        d = int(tf.TensorShape(shape)[-1])
        k = self.num_clusters
        self.scale = glorot_bound(d, self.units)
        self.shared_kernel = self.add_weight("shared_kernel", shape=(d, self.units),
                                             initializer=tf_keras.initializers.RandomUniform(-self.scale, self.scale))
        self.shared_bias = self.add_weight("shared_bias", shape=(self.units,), initializer="zeros")
        # a·W_j with W_j = 1: every cluster starts at the shared network.
        self.cluster_kernel = self.add_weight("cluster_kernel", shape=(k, d, self.units),
                                              initializer=tf_keras.initializers.Constant(self.scale))
        self.cluster_bias = self.add_weight("cluster_bias", shape=(k, self.units), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs, cluster=None):
        if isinstance(inputs, (list, tuple)):
            kernels = tf.unstack(self.shared_kernel[None] * (self.cluster_kernel / self.scale))  # Eq. 6: W_s ⊗ W_j
            biases = tf.unstack(self.shared_bias[None] + self.cluster_bias)
            return [self.activation(tf.matmul(x, w) + b) for x, w, b in zip(inputs, kernels, biases)]
        cluster = tf.cast(cluster, tf.int32)
        rows = tf.dynamic_partition(tf.range(tf.shape(inputs)[0]), cluster, self.num_clusters)
        parts = self.call(tf.dynamic_partition(inputs, cluster, self.num_clusters))
        return tf.reshape(tf.dynamic_stitch(rows, parts), [-1, self.units])

    def get_config(self):
        return {**super().get_config(), "units": self.units, "num_clusters": self.num_clusters,
                "activation": tf_keras.activations.serialize(self.activation)}


class MultiDistributionMLP(tf_keras.layers.Layer):
    """A stack of `MultiDistributionDense` layers, ReLU between them.

    Args:
        units: the layers' widths.
        num_clusters: K.
        dropout: after every hidden layer.
        linear_output: leaves the last layer without activation or dropout (a logit layer).

    Shapes: a list of K [n_j, in] (one per cluster) -> K x [n_j, units[-1]];
    or x [B, in] with cluster [B] int -> [B, units[-1]].
    """

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

    def call(self, x, cluster=None, training=None):
        if not isinstance(x, (list, tuple)):
            cluster = tf.cast(cluster, tf.int32)
            rows = tf.dynamic_partition(tf.range(tf.shape(x)[0]), cluster, self.num_clusters)
            out = self.call(tf.dynamic_partition(x, cluster, self.num_clusters), training=training)
            return tf.reshape(tf.dynamic_stitch(rows, out), [-1, self.units[-1]])
        for i, layer in enumerate(self.dense):
            x = layer(list(x))
            if not (self.linear_output and i == len(self.dense) - 1) and self.dropout:
                x = [self.drop(part, training=training) for part in x]
        return x

    def get_config(self):
        return {**super().get_config(), "units": self.units, "num_clusters": self.num_clusters,
                "dropout": self.dropout, "linear_output": self.linear_output}


class AdlModel(MultiTaskSteps, tf_keras.Model):
    """ADL: the routing picks each sample's cluster, then that cluster's multi-distribution
    bottom and towers score it.

    `call(features)` returns per-task probabilities, `<task>_logit` logits and
    `cluster` (each sample's cluster index, int64).
    """

    CONFIG_CLASS = ADLConfig
    # The Tuner's: rate, width, dropout, the clusters K (paper: 3 industrial, 9 public) and the routing's
    # softmax temperature (1.0: the paper's).
    SEARCH_SPACE = {"learning_rate": LEARNING_RATE, "embedding_dim": EMBEDDING_DIM, "dropout": DROPOUT,
                    "num_clusters": Choice(2, 3, 6, 9), "routing_temperature": Choice(0.1, 0.3, 1.0)}

    def __init__(self, config: ADLConfig, vocab_sizes: Mapping[str, int], **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.vocab_sizes = dict(vocab_sizes)
        self.embeddings = {
            table: tf_keras.layers.Embedding(self.vocab_sizes[table], config.embedding_dim, name=f"embedding_{table}")
            for table in config.embedding_tables()
        }
        self.routing = DistributionRouting(config.num_clusters, config.routing_iterations, config.ewma_beta,
                                           config.routing_temperature, config.duplicate_cosine,
                                           config.min_cluster_share, name="distribution_routing")
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
        # Per field: a unit embedding block, a numeric in [-1, 1]; no field outweighs another.
        e = tf.concat([tf.tanh(parts[n]) if n in self.config.numeric_features
                       else tf.math.l2_normalize(parts[n], axis=-1) for n in self.config.routing_features()], axis=-1)
        return x, e

    def routing_representation(self, features):
        """e_i: the routing input (scaled per field), before the routing's L2 normalisation."""
        return self._representations(features)[1]

    def distribution_coefficients(self, features):
        """r_ij from the stored (frozen) centres: [B, K], no gradient."""
        return self.routing(self.routing_representation(features), training=False)

    def cluster_assignment(self, features):
        """Each sample's cluster index ([B] int64), as routed at inference (and in training)."""
        return tf.argmax(self.distribution_coefficients(features), axis=-1)

    def route(self, e, training=None):
        """Each sample's cluster, [B] int64: hard routing to the argmax cluster (moves the centres in training)."""
        return tf.argmax(self.routing(e, training=training), axis=-1)

    def cluster_logits(self, x, cluster, training=None):
        """{task: [B] logit}, each row through its own cluster's bottom and towers only."""
        # One partition per batch: each part runs through its own cluster's network only.
        k = self.config.num_clusters
        index = tf.cast(cluster, tf.int32)
        rows = tf.dynamic_partition(tf.range(tf.shape(x)[0]), index, k)
        h = self.bottom(tf.dynamic_partition(x, index, k), training=training)
        return {t: tf.reshape(tf.dynamic_stitch(rows, self.towers[t](h, training=training)), tf.shape(cluster))
                for t in TASKS}

    def call(self, features, training=None):
        x, e = self._representations(features)
        cluster = self.route(e, training=training)
        logits = self.cluster_logits(x, cluster, training=training)
        out = {t: tf.sigmoid(logits[t]) for t in TASKS}  # Eq. 7
        out.update({f"{t}_logit": logits[t] for t in TASKS})
        out["cluster"] = cluster
        return out

    def training_report(self, features) -> Dict:
        """{"routing": how a validation batch is routed}, for training.json (trainers/generic.py)."""
        report = routing_report(self, features)
        return {"routing": {k: report[k] for k in ("train_serve_agreement", "batch_fit_agreement", "cluster_sizes",
                                                   "max_centre_cosine")}}


def routing_report(model: AdlModel, features, scenario_key: str = "scenario_id") -> Dict:
    """How a batch is routed: train-vs-serve agreement, cluster sizes per scenario, centre spread.

    Returns a dict of plain Python values:
        "train_serve_agreement": share of rows that a training call (the real
            training path, its centre update undone) routes as serving does;
        "batch_fit_agreement": the same for routing by the batch-fitted centres
            (Algorithm 1's last iteration, the reading this module does not take);
        "sizes": {scenario value: [rows per cluster]} (scenario value as int or str);
        "cluster_sizes": [rows per cluster] over the batch;
        "max_centre_cosine": the largest cosine between two different centres.
    """
    routing = model.routing
    e = model.routing_representation(features)
    served = tf.argmax(routing(e, training=False), axis=-1).numpy()
    saved = [v.numpy() for v in (routing.centres, routing.shares)]
    try:
        trained = tf.argmax(routing(e, training=True), axis=-1).numpy()
    finally:
        routing.centres.assign(saved[0])
        routing.shares.assign(saved[1])
    unit = tf.math.l2_normalize(tf.cast(e, tf.float32), axis=-1)
    fitted = tf.argmax(routing.coefficients(unit, routing.fit_centres(unit, tf.convert_to_tensor(saved[0]))),
                       axis=-1).numpy()
    k = routing.num_clusters
    scenarios = np.asarray(features[scenario_key]).reshape(-1)
    sizes = {}
    for s in np.unique(scenarios):
        key = s.decode() if isinstance(s, bytes) else s.item()
        sizes[key] = np.bincount(served[scenarios == s], minlength=k).tolist()
    cos = saved[0] @ saved[0].T
    off = cos[~np.eye(k, dtype=bool)]
    return {"train_serve_agreement": float(np.mean(trained == served)),
            "batch_fit_agreement": float(np.mean(fitted == served)),
            "sizes": sizes, "cluster_sizes": np.bincount(served, minlength=k).tolist(),
            "max_centre_cosine": float(off.max()) if off.size else 1.0}
