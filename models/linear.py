"""The linear floor: one logistic regression per task on one-hot ids and hashed id crosses.

This is not a paper's method. It is the reference every unified model (PEPNet, ADL,
GRec, the shared-bottom and MMoE baselines) has to beat: if a deep model does not
clearly beat a well-fed logistic regression, its depth is not earning anything.
It reads the same transformed ids as the other models (`models/features.py`: index
0 = absent, vocabulary from 1, OOV buckets last) and, per task t:

    logit_t = b_t + sum_f w_t[f][id_f] + sum_(a, b) w_t[a x b][hash(id_a, id_b) mod cross_buckets]

The one-hot weights are 1-wide embeddings, one table per task and feature, sized by
the feature's vocabulary; each cross (an ordered pair of id features) gets one
`cross_buckets`-row table per task. The hash (`cross_hash`) is FarmHash
(`tf.strings.to_hash_bucket_fast`) of "id_a|id_b": deterministic across runs and
machines, order-sensitive, and a stock op, so the export runs on stock TF Serving.
All weights start at zero, so an untrained model predicts sigmoid(b_t) everywhere.
Conversion and cart are trained over clicked rows, like every other model
(`models.multitask.TASK_POPULATION`).

Fitted like scikit-learn's L2 logistic regression, the objective a "correctly fitted
floor" is judged against (bench/floor.py): per task, the mean cross-entropy over the
task's rows plus 1/(2 C n_t) x the sum of all its squared weights, n_t the task's training
rows. `l2` is 1/(2 C n) for all rows n; a task over clicked rows divides it by the
batch's share of clicked rows (n_t / n). So every weight is shrunk alike, the rare
cross weights included (a penalty on the looked-up weights only, as before, left rare ids
almost unregularised and fell short of scikit-learn's fit). A batch of 1,024 keeps Adam's
noise low and still gives small data sets enough steps an epoch (bench/results/floor.json).

Example:
    model = LogisticRegressionModel(LinearConfig(), vocab_sizes)
    model.compile(optimizer=tf_keras.optimizers.Adam(LinearConfig().learning_rate))
    model.fit(dataset)  # transformed feature dicts with the labels inside
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence, Tuple

import tensorflow as tf
import tf_keras

from models import features as F
from models.baselines import MultiTaskModel
from models.configs import Choice, FromDict, LogRange
from models.multitask import TASKS

# Scalar id features with a vocabulary (or a small integer range): what can be one-hot.
SCALAR_ID_FEATURES = tuple(n for n in (*F.VOCABULARY, *F.INTEGER_CATEGORICAL_MAX) if n not in F.SEQUENCE_FEATURES)
ONE_HOT_FEATURES = tuple(n for n in ("user_id", "item_id", "category_id", "shop_id", "scenario_id",
                                     "user_age_bucket", "user_gender") if n in SCALAR_ID_FEATURES)
CROSSES = (("user_id", "category_id"), ("user_id", "scenario_id"), ("item_id", "scenario_id"))


@dataclasses.dataclass(frozen=True)
class LinearConfig(FromDict):
    features: Tuple[str, ...] = ONE_HOT_FEATURES
    crosses: Tuple[Tuple[str, str], ...] = CROSSES  # ordered pairs: (a, b) and (b, a) are different crosses
    cross_buckets: int = 2**18  # rows of each cross's table (per task)
    # 1/(2 C n) at the C scikit-learn picks on the rich preset's validation day (bench/results/floor.json)
    l2: float = 5e-7
    learning_rate: float = 0.01  # a linear model wants a larger rate than the deep ones
    batch_size: int = 1024

    def __post_init__(self):
        used = set(self.features) | {n for pair in self.crosses for n in pair}
        bad = used - set(SCALAR_ID_FEATURES)
        if bad:
            raise ValueError(f"LinearConfig: {sorted(bad)} are not scalar id features; one of {SCALAR_ID_FEATURES}")
        for pair in self.crosses:
            if len(pair) != 2 or pair[0] == pair[1]:
                raise ValueError(f"LinearConfig: a cross is two different features, got {pair!r}")
        if len(set(self.crosses)) != len(self.crosses) or len(set(self.features)) != len(self.features):
            raise ValueError("LinearConfig: repeated feature or cross")
        if not self.features and not self.crosses:
            raise ValueError("LinearConfig: no feature and no cross")
        if self.cross_buckets < 1 or self.l2 < 0:
            raise ValueError(f"LinearConfig: cross_buckets={self.cross_buckets} must be >= 1, l2={self.l2} >= 0")


def cross_name(pair: Sequence[str]) -> str:
    return f"{pair[0]}_x_{pair[1]}"


def cross_hash(a, b, buckets: int):
    """Bucket in [0, buckets) of each ordered id pair: FarmHash64 of "a|b" mod buckets.

    Args: a, b: integer id tensors of one shape. Returns int64 of that shape.
    """
    joined = tf.strings.join([tf.strings.as_string(tf.cast(a, tf.int64)),
                              tf.strings.as_string(tf.cast(b, tf.int64))], separator="|")
    return tf.strings.to_hash_bucket_fast(joined, buckets)


@tf_keras.utils.register_keras_serializable(package="models.linear")
class SparseLinear(tf_keras.layers.Layer):
    """Per-task linear scores over one-hot ids and hashed crosses: the weights of the model.

    Args:
        feature_names: id features, one weight per id (table size: `vocab_sizes[name]`).
        crosses: ordered pairs of id features, one weight per `cross_hash` bucket.
        vocab_sizes: {feature: table size}; extra entries are ignored.
        cross_buckets: rows of each cross table.
        tasks: names of the scores; one bias and one table per feature and cross for each.
    Input: {feature: [batch] int ids}. Output: {task: [batch] float32 logit}.
    """

    def __init__(self, feature_names: Sequence[str], crosses: Sequence[Sequence[str]], vocab_sizes: Mapping[str, int],
                 cross_buckets: int, tasks: Sequence[str] = TASKS, **kwargs):
        super().__init__(**kwargs)
        self.feature_names = tuple(feature_names)
        self.crosses = tuple(tuple(pair) for pair in crosses)
        if not self.feature_names and not self.crosses:
            raise ValueError("SparseLinear needs at least one feature or cross")
        missing = set(self.feature_names) - set(vocab_sizes)
        if missing:
            raise ValueError(f"no vocabulary size for {sorted(missing)}")
        self.vocab_sizes = {n: int(vocab_sizes[n]) for n in self.feature_names}
        self.cross_buckets = int(cross_buckets)
        self.tasks = tuple(tasks)
        zeros = tf_keras.initializers.Zeros()
        self.tables = {}  # "<task>/<feature or cross name>" -> Embedding(size, 1)
        for t in self.tasks:
            for n in self.feature_names:
                self.tables[f"{t}/{n}"] = tf_keras.layers.Embedding(
                    self.vocab_sizes[n], 1, embeddings_initializer=zeros, name=f"w_{t}_{n}")
            for pair in self.crosses:
                self.tables[f"{t}/{cross_name(pair)}"] = tf_keras.layers.Embedding(
                    self.cross_buckets, 1, embeddings_initializer=zeros, name=f"w_{t}_{cross_name(pair)}")
        self.bias = {t: self.add_weight(name=f"bias_{t}", shape=(), initializer=zeros) for t in self.tasks}

    def indices(self, features):
        """{feature or cross name: [batch] int64 row of its tables}."""
        idx = {n: tf.cast(tf.reshape(features[n], [-1]), tf.int64) for n in self.feature_names}
        for a, b in self.crosses:
            idx[cross_name((a, b))] = cross_hash(tf.reshape(features[a], [-1]), tf.reshape(features[b], [-1]),
                                                 self.cross_buckets)
        return idx

    def call(self, features):
        idx = self.indices(features)
        return {t: self.bias[t] + tf.add_n([self._lookup(t, n, i) for n, i in idx.items()]) for t in self.tasks}

    def sum_of_squares(self, task):
        """The sum of the squares of all of `task`'s weights (bias excluded)."""
        return tf.add_n([tf.reduce_sum(tf.square(table.embeddings)) for name, table in self.tables.items()
                         if name.startswith(f"{task}/")])

    def _lookup(self, task, name, ids):
        return tf.squeeze(self.tables[f"{task}/{name}"](ids), -1)

    def get_config(self):
        return {**super().get_config(), "feature_names": list(self.feature_names),
                "crosses": [list(p) for p in self.crosses], "vocab_sizes": dict(self.vocab_sizes),
                "cross_buckets": self.cross_buckets, "tasks": list(self.tasks)}


@tf_keras.utils.register_keras_serializable(package="models.linear")
class LogisticRegressionModel(MultiTaskModel):
    """One logistic regression per task (`SparseLinear` over `config.features` and `config.crosses`).

    Args:
        config: a `LinearConfig`.
        vocab_sizes: {feature: embedding-table size} (`unified_trainer.all_vocab_sizes`).
    Input: {name: [batch] tensor} transformed features (labels may be inside).
    Output: {task: [batch] probability, f"{task}_logit": [batch] logit} for click,
        conversion and cart.
    """

    CONFIG_CLASS = LinearConfig
    # The Tuner's: rate, the L2 weight and the cross tables' rows (its weights are 1 wide: no width to search).
    SEARCH_SPACE = {"learning_rate": LogRange(1e-3, 1e-1), "l2": LogRange(1e-8, 1e-4),
                    "cross_buckets": Choice(2**16, 2**18, 2**20)}

    def __init__(self, config: LinearConfig, vocab_sizes: Mapping[str, int], **kwargs):
        super().__init__(config, vocab_sizes, name=kwargs.pop("name", "logistic_regression"), **kwargs)
        self.linear = SparseLinear(config.features, config.crosses, self.vocab_sizes, config.cross_buckets,
                                   tasks=TASKS, name="linear")

    def logits(self, features, training=None):
        return self.linear(features)

    def compute_losses(self, features, outputs):
        """Point loss per task plus `l2` x the task's squared weights / the batch's share of the task's rows."""
        total = super().compute_losses(features, outputs)
        if self.config.l2 > 0:
            for t in TASKS:
                squares = self.linear.sum_of_squares(t)
                w = self.task_weights(features, t)
                if w is None:
                    total += self.config.l2 * squares
                else:  # 1/(2 C n_t) = l2 x n / n_t; a batch without the task's rows adds nothing
                    total += tf.math.divide_no_nan(self.config.l2 * squares * tf.cast(tf.size(w), tf.float32),
                                                  tf.reduce_sum(w))
        return total
