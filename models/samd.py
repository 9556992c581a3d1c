"""SAMD: scenario-aware meta distillation of the general model into per-scenario students.

Paper: Scenario-Aware Model-agnostic Distillation (sections 4.2, 4.3, Algorithm 1).
One training process distils the frozen general model (the KEEP model of
`models/keep.py`) into N heterogeneous students, one per scenario:

* scenario representation T_i (Equations 2, 4, 5) from the embeddings of the
  scenario's static attributes (explicit, ER_i) and the mean ER of its top-G most
  similar scenarios by user co-occurrence (implicit, IR_i; the similarity itself,
  Equation 3, is computed on Beam by `components/scenario_similarity`);
* soft clustering (Equations 6-8): C_i = sum_k softmax(tau(W_p T_i))_k E_k;
* meta function (Equation 9): W_T^i = g(T_i ⊕ C_i) W_d^i, normalised so that for
  every teacher layer n the weights over the student's layers sum to 1;
* heterogeneous feature distillation (Equation 10) with learned projections to a
  common width, plus each student's own cross-entropy (Equation 11).

Readings of the paper (and where it is silent, our choices; each is a config field):
* Dimension of W_d. The text prints W_d^i ∈ R^{M_g×M_g×M_g×M_i}, which cannot
  multiply g's M_g×M_g output into the stated W_T^i ∈ R^{M_g×M_i}. We read it as
  g(·) ∈ R^{M_g×M_g} (reshaped from the MLP's output) and W_d ∈ R^{M_g×M_i}, so
  W_T^i = g(T_i ⊕ C_i) · W_d is a matrix product.
* W_d shared per student depth. The paper calls W_d^i the plug-in that converts the
  general strategy for "heterogeneous sub-models"; held per scenario (our first
  reading), softmax(G_i W_d^i) is a free table per scenario and similar scenarios are
  never tied, the property the paper claims (section 4.3.1, Figure 8). So there is one
  W_d per student depth M_i, shared by every student of that depth: W_T^i then
  differs between scenarios only through g(T_i ⊕ C_i). W_d starts random (N(0, 1)),
  not zero, so g, T and the centres get gradient from the first step.
* Normalisation. The constraint sum_m w_mn = 1 is met with a softmax over the
  student's layers for each teacher layer, at temperature `transfer_temperature`.
* Graded transfer. The meta parameters get gradient from L_fd only, and L_fd is
  linear in W_T on the simplex, so its minimum is a vertex: trained literally, every
  row of W_T goes one-hot (it did: each teacher layer sent all its weight to one
  student layer). The paper's Figure 8 shows graded maps, so the meta objective adds
  an entropy term: for each row, w·L - λ H(w), whose minimiser is the Boltzmann
  distribution softmax(-L/λ) (λ = `transfer_entropy`; 0 is the literal reading).
  The meta parameters (T's, the clusters', g's and W_d) have their own Adam at
  `meta_learning_rate`, 1e-4 as in the paper (section 5.1.3); the students keep
  `learning_rate`.
* Meta objective. Algorithm 1 updates the meta network by the loss of Equation 11,
  i.e. by L_fd: it learns which layer pairs are easy to match, not which transfer
  helps the student (`meta_objective="distill"`, the literal reading). The default,
  `"lookahead"` (the learning-to-transfer family the paper cites), maximises
  cos(∇θ L_ce, ∇θ L_fd) over each student's parameters θ: to first order, one SGD
  step on L_ce + L_fd lowers L_ce in proportion to ∇L_ce·∇L_fd, so W_T moves towards
  the pairs whose distillation pulls the student where its own labels do (same batch;
  differentiated through ∇θ L_fd with nested tapes). With it, `null_transfer` (on by
  default) adds a column to W_T whose weight is distilled nowhere, so a scenario the
  teacher does not fit can take less transfer; under L_fd that column (loss 0) would
  always win, so it needs the look-ahead. On the SAMD benchmark (bench/samd.py,
  paired against the same students trained alone, both without the embedding
  transfer below) the default is above alone on the minor and homogeneous groups and
  level on the heterogeneous one; the literal reading is below alone on the
  heterogeneous group in most seeds. W_T stays close to uniform at the paper's meta
  learning rate, and a plain all2all at the no-transfer column's mass as distill
  weight does about as well: on this data most of the gain is the lower transfer
  weight, not what the meta network learns (docs/benchmarks.md, samd).
* Training of T. The paper pre-trains T offline and refreshes it weekly without
  naming the objective. Here T's parameters (attribute embeddings, W_exp, W_imp,
  W_sim) are trained with the meta network through the meta objective, in the same
  run; the learnt T_i are saved with W_T^i. `explicit=False` replaces the attribute
  embeddings by a free per-scenario embedding; `implicit=False` drops IR_i.
* Similarity (Equation 3). Raw, Sim(i, j) grows with both scenarios' traffic, so the
  super scenario, which every user visits, is every scenario's nearest neighbour and
  IR_i is nearly the same for all. `similarity="cosine"` ranks the top-G by
  Sim(i, j) / sqrt(Sim(i, i) Sim(j, j)) (Sim(i, i) is Equation 3 with i = j);
  `"raw"` ranks by Equation 3 itself.
* Teacher layers. The paper distils from the 4 layers of its general DNN. Our teacher
  is KEEP: `teacher_layers="click"` takes its shared bottom (embeddings + attention)
  and the click tower's hidden layers (M_g = 1 + depth; 4 at the default depth 3),
  the layers trained on every impression; `"all"` adds the conversion and cart
  towers, which are trained on clicked rows only.
* Projections. Equation 10 leaves Φ_i, Φ_g open. `projection="pair"` (default) gives
  every (student layer m, teacher layer n) pair its own trainable Φ_mn from m's width
  to n's, and compares with the teacher layer itself (FitNets-style hints), so each
  pair can be matched exactly. `"shared"` (our first reading) has one trainable
  Φ_i^m per student layer to `projection_dim` against fixed random Φ_g^n: one Φ_i^m
  must then match several unrelated targets at once, which puts a floor under L_fd.
  Both sides are layer-normalised without parameters, so neither can shrink to zero.
* Scale. L_fd is averaged over the teacher's layers (Σ_n Σ_m w_mn L_mn / M_g), so its
  size does not grow with M_g; `distill_weight` weighs it against the cross-entropy.
* Response distillation (beyond the paper, off by default): `response_weight` > 0
  adds the cross-entropy of the student's click logit against the teacher's click
  probability.
* Embedding transfer (beyond the paper, on by default): `teacher_embeddings` starts
  every student id table that the teacher also has (same vocabulary: user, item,
  category, shop, profile, hour) from the teacher's learnt table, reduced to the
  student's width by its top principal directions (`teacher_embedding_init`); the
  students then train as usual and stay standalone (copied values, no teacher op).
  Why: the feature distillation moves a student's tables only through its own rows,
  where a heterogeneous scenario sees each user about 20 times in training; the
  teacher's tables were fitted on every scenario's rows, and the latent user and
  item vectors behind the clicks are shared by all scenarios. On the SAMD benchmark
  (bench/samd.py, paired against the same students trained alone) SAMD with it is
  above alone on every group in every seed and above KEEP on the heterogeneous
  scenarios; without it (`samd_paper`) the heterogeneous group shows no difference.
  The embedding transfer alone (no distillation) does as well: over the seeds SAMD
  minus it is no difference on any group. On this data the transfer that works is
  the teacher's embeddings, not its layers (docs/benchmarks.md, samd).
* Strategies (the ablation table): `meta` (the paper's), `no_cluster` (C_i dropped
  from g's input), `all2all` (w_mn = 1/M_i) and `similarity` (w_mn from the linear
  CKA between layer outputs on the batch, normalised over m, no gradient).
* Early stopping and sampling (trainers/samd.py): each student keeps the
  weights of its own best validation click AUC; per-scenario batches are
  proportional to the square root of the scenario's rows (`sampling="sqrt"`) rather
  than equal (`"uniform"`, Algorithm 1 read literally), so a minor scenario is not
  replayed many times per pass of the super scenario.

Example (trainers/samd.py does this):
    config = SamdConfig()
    widths = layer_widths(teacher.teacher_layers(features, tasks=teacher_tasks(config)))
    distiller = SamdDistiller(config, teacher, students, table, widths, student_widths)
    distiller.compile(optimizer=tf_keras.optimizers.Adam(config.learning_rate))
    distiller.fit(batches, callbacks=[PerStudentEarlyStopping(students, patience=2)], ...)  # N feature dicts per step
    distiller.transfer_report()   # {"scenarios": {sid: W_T^i, its entropy, T_i, C_i, p_i}}
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from models.configs import FromDict
from models.multitask import TASKS, pointwise_loss

STRATEGIES = ("meta", "no_cluster", "all2all", "similarity")
TEACHER_LAYERS = ("click", "all")
PROJECTIONS = ("pair", "shared")
SIMILARITIES = ("cosine", "raw")
SAMPLINGS = ("sqrt", "uniform")
META_OBJECTIVES = ("distill", "lookahead")
META_STRATEGIES = ("meta", "no_cluster")  # the strategies whose W_T is learnt


@dataclasses.dataclass(frozen=True)
class SamdConfig(FromDict):
    strategy: str = "meta"
    explicit: bool = True
    implicit: bool = True
    scenario_dim: int = 16  # d: T_i, C_i, E_k (paper: 16 for scenario features)
    attribute_dim: int = 8
    num_clusters: int = 3  # K (paper: 3 on AliExpress)
    meta_units: Tuple[int, ...] = (64, 32, 16)  # g (paper: 64-32-16)
    teacher_layers: str = "click"  # "click": bottom + click tower (M_g = 4, as the paper's 4); "all"
    projection: str = "pair"  # "pair": Φ per layer pair; "shared": Φ_i^m to projection_dim vs fixed random Φ_g^n
    projection_dim: int = 32  # "shared" only
    distill_loss: str = "l2"  # "l2" or "mmd"
    distill_weight: float = 1.0
    transfer_temperature: float = 1.0  # softmax temperature of W_T
    transfer_entropy: float = 0.1  # λ of the entropy term on W_T's rows (0: the literal, one-hot-prone reading)
    response_weight: float = 0.0  # beyond the paper: cross-entropy against the teacher's click probability
    teacher_embeddings: bool = True  # beyond the paper: shared id tables start from the teacher's (PCA)
    meta_objective: str = "lookahead"  # what the meta parameters minimise: "lookahead" or "distill" (L_fd, literal)
    null_transfer: bool = True  # W_T gets a "no transfer" column (with "lookahead" only)
    learning_rate: float = 3e-3  # the students' (paper: 1e-4 on far larger data); 1e-3 ran into the epoch cap
    meta_learning_rate: float = 1e-4  # T, the clusters, g and W_d (paper: 1e-4)
    batch_size: int = 256  # per scenario per step, on average over the scenarios (paper: 512)
    sampling: str = "sqrt"  # per-scenario batch ∝ sqrt(rows); "uniform": one equal batch each
    top_g: int = 2  # paper: 2 on AliExpress
    similarity: str = "cosine"  # top-G ranking: "cosine"-normalised Equation 3, or "raw"

    def __post_init__(self):
        for name, allowed in (("strategy", STRATEGIES), ("teacher_layers", TEACHER_LAYERS),
                              ("projection", PROJECTIONS), ("similarity", SIMILARITIES), ("sampling", SAMPLINGS),
                              ("distill_loss", ("l2", "mmd")), ("meta_objective", META_OBJECTIVES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown SAMD {name} {getattr(self, name)!r}; one of {allowed}")
        if self.transfer_temperature <= 0 or self.transfer_entropy < 0 or self.response_weight < 0:
            raise ValueError("transfer_temperature must be > 0, transfer_entropy and response_weight >= 0")
        if self.null_transfer and self.meta_objective != "lookahead" and self.strategy in META_STRATEGIES:
            # Under L_fd the empty column (loss 0) always wins: no transfer at all.
            raise ValueError("null_transfer needs meta_objective='lookahead' (with 'distill', set null_transfer false)")


def rank_neighbours(scenarios: Sequence[str], matrix, g: int, normalise: str = "cosine") -> Dict[str, List[str]]:
    """The top-G most similar other scenarios of each (Equation 3's matrix, diagonal included).

    "cosine" divides Sim(i, j) by sqrt(Sim(i, i) Sim(j, j)), so a scenario's traffic
    alone does not make it everyone's neighbour; ties go to the earlier scenario.
    """
    m = np.asarray(matrix, np.float64)
    if normalise == "cosine":
        d = np.sqrt(np.clip(np.diag(m), 0.0, None))
        m = np.divide(m, np.outer(d, d), out=np.zeros_like(m), where=np.outer(d, d) > 0)
    elif normalise != "raw":
        raise ValueError(f"unknown similarity normalisation {normalise!r}; one of {SIMILARITIES}")
    out = {}
    for i, sid in enumerate(scenarios):
        order = sorted((j for j in range(len(scenarios)) if j != i), key=lambda j: (-m[i, j], j))
        out[sid] = [scenarios[j] for j in order[:g]]
    return out


@dataclasses.dataclass(frozen=True)
class ScenarioTable:
    """The scenarios' static attributes and implicit neighbours, in a fixed order."""

    scenario_ids: Tuple[str, ...]
    attributes: Tuple[Tuple[int, ...], ...]  # [N, m] attribute value indices
    attribute_sizes: Tuple[int, ...]  # vocabulary size of each attribute
    top_g: Tuple[Tuple[int, ...], ...]  # [N, G] indices of the most similar other scenarios

    @classmethod
    def build(cls, rows: Sequence[Mapping[str, str]], attribute_names: Sequence[str],
              neighbours: Mapping[str, Sequence[str]]) -> "ScenarioTable":
        ids = tuple(r["scenario_id"] for r in rows)
        vocab = [sorted({r[a] for r in rows}) for a in attribute_names]
        attrs = tuple(tuple(vocab[k].index(r[a]) for k, a in enumerate(attribute_names)) for r in rows)
        g = min((len(v) for v in neighbours.values()), default=0)
        # A scenario without neighbours (none known, or G = 0) stands in for itself.
        top = tuple(tuple(ids.index(s) for s in neighbours.get(sid, ())[:g]) or (i,) * max(g, 1)
                    for i, sid in enumerate(ids))
        return cls(ids, attrs, tuple(len(v) for v in vocab), top)


class ScenarioRepresentation(tf_keras.layers.Layer):
    """T_i for every scenario (Equations 2, 4, 5); returns [N, d]."""

    def __init__(self, attributes, attribute_sizes, top_g, dim=16, attribute_dim=8, explicit=True, implicit=True,
                 **kwargs):
        super().__init__(**kwargs)
        self.attributes = [list(a) for a in attributes]
        self.attribute_sizes = list(attribute_sizes)
        self.top_g = [list(t) for t in top_g]
        self.dim, self.attribute_dim = dim, attribute_dim
        self.explicit, self.implicit = explicit, implicit
        n = len(self.attributes)
        if explicit:
            self.attribute_embeddings = [tf_keras.layers.Embedding(s, attribute_dim) for s in self.attribute_sizes]
        else:
            self.scenario_embedding = tf_keras.layers.Embedding(n, attribute_dim)
        self.w_exp = tf_keras.layers.Dense(dim, activation="tanh", name="w_exp")
        self.w_imp = tf_keras.layers.Dense(dim, activation="tanh", name="w_imp")
        self.w_sim = tf_keras.layers.Dense(dim, activation="tanh", name="w_sim")

    def call(self, inputs=None):
        attrs = tf.constant(self.attributes, tf.int32)
        if self.explicit:
            e = tf.concat([emb(attrs[:, k]) for k, emb in enumerate(self.attribute_embeddings)], -1)
        else:
            e = self.scenario_embedding(tf.range(len(self.attributes)))
        er = self.w_exp(e)  # Equation 2
        if not self.implicit:
            return self.w_sim(er)  # Equation 5 without IR
        ir = self.w_imp(tf.reduce_mean(tf.gather(er, tf.constant(self.top_g, tf.int32)), axis=1))  # Equation 4
        return self.w_sim(tf.concat([er, ir], -1))  # Equation 5

    def get_config(self):
        return {**super().get_config(), "attributes": self.attributes, "attribute_sizes": self.attribute_sizes,
                "top_g": self.top_g, "dim": self.dim, "attribute_dim": self.attribute_dim,
                "explicit": self.explicit, "implicit": self.implicit}


class SoftCluster(tf_keras.layers.Layer):
    """Soft assignment of scenarios to K trainable centres (Equations 6-8); returns (C, p)."""

    def __init__(self, num_clusters=3, **kwargs):
        super().__init__(**kwargs)
        self.num_clusters = num_clusters
        self.w_p = tf_keras.layers.Dense(num_clusters, activation="tanh", use_bias=False, name="w_p")

    def build(self, input_shape):
        self.centres = self.add_weight(name="centres", shape=(self.num_clusters, int(input_shape[-1])),
                                       initializer="glorot_uniform")

    def call(self, t):
        q = self.w_p(t)  # Equation 6
        p = tf.nn.softmax(q, axis=-1)  # Equation 7
        return p @ self.centres, p  # Equation 8

    def get_config(self):
        return {**super().get_config(), "num_clusters": self.num_clusters}


class MetaFunction(tf_keras.layers.Layer):
    """W_T^i = softmax(g(T_i ⊕ C_i) W_d / temperature) over the student's layers (Equation 9).

    Args:
      teacher_layers: M_g.
      student_layers: M_i of each scenario, in scenario order. One W_d per distinct M_i,
        shared by the students of that depth (see the module docstring).
      units: g's hidden units.
      temperature: the softmax temperature.
      null_column: one more column per W_T, the weight a teacher layer sends nowhere.
    Shapes: [N, 2d] (or [N, d] without clusters) -> a list of N [M_g, M_i (+1)] matrices.
    """

    def __init__(self, teacher_layers: int, student_layers: Sequence[int], units=(64, 32, 16), temperature=1.0,
                 null_column=False, **kwargs):
        super().__init__(**kwargs)
        self.teacher_layers = teacher_layers
        self.student_layers = [int(m) for m in student_layers]
        self.units = tuple(units)
        self.temperature = float(temperature)
        self.null_column = bool(null_column)
        self.g = [tf_keras.layers.Dense(u, activation="relu") for u in self.units]
        self.g_out = tf_keras.layers.Dense(teacher_layers * teacher_layers, name="g_out")
        # Random, not zero: with W_d = 0 no gradient reaches g, T or the centres.
        self.plug_ins = {
            m: self.add_weight(name=f"w_d_{m}", shape=(teacher_layers, m + int(self.null_column)),
                               initializer=tf_keras.initializers.RandomNormal(stddev=1.0))
            for m in sorted(set(self.student_layers))
        }

    def call(self, scenario_inputs):
        h = scenario_inputs
        for dense in self.g:
            h = dense(h)
        general = tf.reshape(self.g_out(h), [-1, self.teacher_layers, self.teacher_layers])  # g(·): M_g x M_g
        return [tf.nn.softmax(general[i] @ self.plug_ins[m] / self.temperature, axis=-1)  # Equation 9
                for i, m in enumerate(self.student_layers)]

    def get_config(self):
        return {**super().get_config(), "teacher_layers": self.teacher_layers,
                "student_layers": self.student_layers, "units": self.units, "temperature": self.temperature,
                "null_column": self.null_column}


def row_entropy(w):
    """Mean over the rows of W_T of the entropy over the student's layers: [M_g, M_i] -> scalar."""
    return tf.reduce_mean(-tf.reduce_sum(w * tf.math.log(tf.maximum(w, 1e-12)), -1))


def _layer_norm(x):
    mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(var + 1e-6)


def l2_distance(a, b):
    """Mean over the batch of the squared distance, per coordinate: [B, D] x [B, D] -> scalar."""
    return tf.reduce_mean(tf.square(a - b))


def mmd_distance(a, b, bandwidth=None):
    """Maximum mean discrepancy with a Gaussian kernel between the two batches of vectors."""
    def kernel(x, y):
        d2 = tf.reduce_sum(tf.square(x[:, None, :] - y[None, :, :]), -1)
        bw = tf.cast(tf.shape(x)[-1], tf.float32) if bandwidth is None else bandwidth
        return tf.exp(-d2 / bw)

    return tf.reduce_mean(kernel(a, a)) + tf.reduce_mean(kernel(b, b)) - 2.0 * tf.reduce_mean(kernel(a, b))


def linear_cka(x, y):
    """Linear CKA between two layers' outputs on a batch: [B, Dx], [B, Dy] -> scalar in [0, 1]."""
    x = x - tf.reduce_mean(x, 0, keepdims=True)
    y = y - tf.reduce_mean(y, 0, keepdims=True)
    cross = tf.reduce_sum(tf.square(tf.matmul(y, x, transpose_a=True)))
    norm = tf.norm(tf.matmul(x, x, transpose_a=True)) * tf.norm(tf.matmul(y, y, transpose_a=True))
    return tf.math.divide_no_nan(cross, norm)


class SamdDistiller(tf_keras.Model):
    """Algorithm 1: every step takes one batch per scenario and updates all students and the meta network.

    `teacher` is frozen (its variables are not trainable and receive no update);
    `students` maps scenario ids to `models.students.Student`s, in `table` order.
    `teacher_widths` are the widths of the distilled teacher layers
    (`teacher.teacher_layers(features, tasks=teacher_tasks(config))`).
    """

    def __init__(self, config: SamdConfig, teacher, students: Mapping[str, tf_keras.Model], table: ScenarioTable,
                 teacher_widths: Sequence[int], student_widths: Mapping[str, Sequence[int]], **kwargs):
        super().__init__(name=kwargs.pop("name", "samd"), **kwargs)
        self.config = config
        self.table = table
        self.teacher = teacher
        self.teacher.trainable = False
        self.students = dict(students)
        self.scenario_ids = list(table.scenario_ids)
        self.teacher_widths = list(teacher_widths)
        self.student_widths = {s: list(w) for s, w in student_widths.items()}
        m_g = len(self.teacher_widths)
        self.representation = ScenarioRepresentation(
            table.attributes, table.attribute_sizes, table.top_g, config.scenario_dim, config.attribute_dim,
            config.explicit, config.implicit, name="scenario_representation")
        self.cluster = SoftCluster(config.num_clusters, name="soft_cluster")
        self.meta = MetaFunction(m_g, [len(self.student_widths[s]) for s in self.scenario_ids], config.meta_units,
                                 config.transfer_temperature, config.null_transfer, name="meta_function")
        self.meta_optimizer = tf_keras.optimizers.Adam(config.meta_learning_rate)
        if config.projection == "pair":
            # Φ_mn: student layer m -> teacher layer n's width, one per pair.
            self.student_projections = {
                s: [[tf_keras.layers.Dense(w_n, name=f"phi_{s}_{m}_{n}") for n, w_n in enumerate(self.teacher_widths)]
                    for m in range(len(widths))]
                for s, widths in self.student_widths.items()
            }
        else:
            rng = np.random.default_rng(0)
            # Φ_g: fixed random projections of the teacher's layers (not trainable; see the module docstring).
            self.teacher_projections = [
                tf.constant(rng.normal(size=(w, config.projection_dim)) / np.sqrt(w), tf.float32)
                for w in self.teacher_widths
            ]
            self.student_projections = {
                s: [tf_keras.layers.Dense(config.projection_dim, name=f"phi_{s}_{m}") for m in range(len(widths))]
                for s, widths in self.student_widths.items()
            }
        self.loss_tracker = tf_keras.metrics.Mean(name="loss")
        self.fd_tracker = tf_keras.metrics.Mean(name="loss_fd")
        self.ce_tracker = tf_keras.metrics.Mean(name="loss_ce")
        self.entropy_tracker = tf_keras.metrics.Mean(name="transfer_entropy")
        self.auc = {s: tf_keras.metrics.AUC(name=f"auc_{s}") for s in self.scenario_ids}

    def meta_variables(self):
        """T's, the clusters', g's and W_d: updated by the meta optimizer."""
        return (self.representation.trainable_variables + self.cluster.trainable_variables
                + self.meta.trainable_variables)

    def scenario_state(self):
        """(T [N, d], C [N, d], p [N, K], [W_T^i]) for the current parameters."""
        t = self.representation(None)
        c, p = self.cluster(t)
        meta_in = t if self.config.strategy == "no_cluster" else tf.concat([t, c], -1)
        return t, c, p, self.meta(meta_in)

    def _weights(self, i, meta_weights, student_layers, teacher_layers):
        m_i, m_g = len(student_layers), len(teacher_layers)
        if self.config.strategy == "all2all":
            return tf.fill([m_g, m_i], 1.0 / m_i)
        if self.config.strategy == "similarity":
            cka = tf.stack([tf.stack([linear_cka(s, t) for s in student_layers]) for t in teacher_layers])
            return tf.stop_gradient(tf.math.divide_no_nan(cka, tf.reduce_sum(cka, -1, keepdims=True)))
        return meta_weights[i]

    def pair_losses(self, sid, student_layers, teacher_layers):
        """L(Φ_i(F_i^m), Φ_g(F_g^n)) for every pair: [M_g, M_i]."""
        dist = l2_distance if self.config.distill_loss == "l2" else mmd_distance
        if self.config.projection == "pair":
            targets = [_layer_norm(t) for t in teacher_layers]
            return tf.stack([tf.stack([dist(_layer_norm(self.student_projections[sid][m][n](x)), targets[n])
                                       for m, x in enumerate(student_layers)]) for n in range(len(targets))])
        phi_s = [_layer_norm(p(x)) for p, x in zip(self.student_projections[sid], student_layers)]
        phi_t = [_layer_norm(x @ p) for p, x in zip(self.teacher_projections, teacher_layers)]
        return tf.stack([tf.stack([dist(s, t) for s in phi_s]) for t in phi_t])

    def distillation_loss(self, sid, weights, student_layers, teacher_layers):
        """Equation 10: sum_m sum_n w_mn L(Φ_i(F_i^m), Φ_g(F_g^n)); weights are [M_g, M_i]."""
        losses = self.pair_losses(sid, student_layers, teacher_layers)
        if weights.shape[-1] == losses.shape[-1] + 1:  # the "no transfer" column costs nothing
            losses = tf.pad(losses, [[0, 0], [0, 1]])
        # Averaged over teacher layers (each row of weights sums to 1), so L_fd stays on the
        # scale of one layer pair whatever M_g is, comparable to the cross-entropy.
        return tf.reduce_sum(weights * losses) / len(teacher_layers)

    def _scenario_loss(self, i, sid, features, meta_weights, training):
        tasks = teacher_tasks(self.config)
        teacher_layers = [tf.stop_gradient(x) for x in
                          self.teacher.teacher_layers(features, training=False, tasks=tasks)]
        student = self.students[sid]
        student_layers, logits = student.forward(features, training=training)
        weights = self._weights(i, meta_weights, student_layers, teacher_layers)
        fd = self.distillation_loss(sid, weights, student_layers, teacher_layers)
        ce = 0.0
        for task, logit in logits.items():
            population = None if task == "click" else tf.cast(features["click"], tf.float32)
            ce += pointwise_loss(tf.cast(features[task], tf.float32), logit, population)
        if self.config.response_weight > 0:
            soft = tf.stop_gradient(self.teacher(features, training=False)["click"])
            ce += self.config.response_weight * pointwise_loss(soft, logits["click"])
        return fd, ce, tf.sigmoid(logits["click"]), row_entropy(weights)

    def _alignment(self, sid, inner, fd, ce):
        """cos(∇θ L_ce, ∇θ L_fd) over the student's own parameters θ; differentiable in W_T through ∇θ L_fd.

        First order, one SGD step θ' = θ - α(∇L_ce + ∇L_fd) lowers L_ce by α ∇L_ce·∇L_fd
        (plus a term without W_T): the meta objective of the look-ahead reading.
        """
        theta = self.students[sid].trainable_variables
        pairs = [(tf.convert_to_tensor(a), tf.convert_to_tensor(b))
                 for a, b in zip(inner.gradient(ce, theta), inner.gradient(fd, theta))
                 if a is not None and b is not None]
        if not pairs:
            return 0.0
        dot = tf.add_n([tf.reduce_sum(tf.stop_gradient(a) * b) for a, b in pairs])
        norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(a)) for a, _ in pairs])
                       * tf.add_n([tf.reduce_sum(tf.square(b)) for _, b in pairs]))
        return dot / (tf.stop_gradient(norm) + 1e-12)

    def _step(self, data, training, lookahead=False):
        """(Equation 11's loss, L_fd, L_ce, the meta objective, mean row entropy of W_T).

        The meta objective is what the meta parameters minimise: per row of W_T,
        w·L - λH(w) ("distill"), or -cos(∇L_ce, ∇L_fd) - λH(w) with `lookahead`.
        """
        _, _, _, meta_weights = self.scenario_state()
        total_fd, total_ce, total_h, total_align = 0.0, 0.0, 0.0, 0.0
        for i, sid in enumerate(self.scenario_ids):
            if lookahead:
                with tf.GradientTape(persistent=True) as inner:
                    fd, ce, p_click, h = self._scenario_loss(i, sid, data[i], meta_weights, training)
                total_align += self._alignment(sid, inner, fd, ce)
            else:
                fd, ce, p_click, h = self._scenario_loss(i, sid, data[i], meta_weights, training)
            total_fd += fd
            total_ce += ce
            total_h += h
            self.auc[sid].update_state(data[i]["click"], p_click)
        learnt = self.config.strategy in META_STRATEGIES
        entropy_term = -self.config.transfer_entropy * total_h if learnt else 0.0
        fit = -total_align if lookahead else self.config.distill_weight * total_fd
        mean_h = total_h / len(self.scenario_ids)
        return self.config.distill_weight * total_fd + total_ce, total_fd, total_ce, fit + entropy_term, mean_h  # Eq. 11

    def train_step(self, data):
        lookahead = self.config.meta_objective == "lookahead" and self.config.strategy in META_STRATEGIES
        with tf.GradientTape(persistent=True) as tape:
            loss, fd, ce, meta_objective, h = self._step(data, training=True, lookahead=lookahead)
        meta = self.meta_variables()
        meta_ids = {id(v) for v in meta}
        rest = [v for v in self.trainable_variables if id(v) not in meta_ids]
        student_grads = tape.gradient(loss, rest)
        meta_grads = tape.gradient(meta_objective, meta)
        del tape
        self.optimizer.apply_gradients([(g, v) for g, v in zip(student_grads, rest) if g is not None])
        self.meta_optimizer.apply_gradients([(g, v) for g, v in zip(meta_grads, meta) if g is not None])
        return self._update(loss, fd, ce, h)

    def test_step(self, data):
        loss, fd, ce, _, h = self._step(data, training=False)
        return self._update(loss, fd, ce, h)

    def _update(self, loss, fd, ce, h):
        self.loss_tracker.update_state(loss)
        self.fd_tracker.update_state(fd)
        self.ce_tracker.update_state(ce)
        self.entropy_tracker.update_state(h)
        return {m.name: m.result() for m in self.metrics}

    @property
    def metrics(self):
        return ([self.loss_tracker, self.fd_tracker, self.ce_tracker, self.entropy_tracker]
                + [self.auc[s] for s in self.scenario_ids])

    def call(self, data, training=None):
        return self._step(data, training)[0]

    def transfer_report(self) -> Dict:
        """W_T^i (and its mean row entropy), T_i, C_i and p_i of every scenario, as plain lists."""
        t, c, p, w = self.scenario_state()
        learnt = self.config.strategy in META_STRATEGIES
        report = {"strategy": self.config.strategy, "scenarios": {}}
        for i, sid in enumerate(self.scenario_ids):
            report["scenarios"][sid] = {
                "transfer_weights": w[i].numpy().tolist() if learnt else None,
                "transfer_entropy": float(row_entropy(w[i])) if learnt else None,
                "max_entropy": float(np.log(w[i].shape[-1])),  # W_T's last column is "no transfer" with null_transfer
                "scenario_representation": t[i].numpy().tolist(),
                "cluster_representation": c[i].numpy().tolist(),
                "cluster_assignment": p[i].numpy().tolist(),
            }
        return report

    def get_config(self):
        return {"config": dataclasses.asdict(self.config)}


def teacher_tasks(config: SamdConfig) -> Tuple[str, ...]:
    """The KEEP towers whose hidden layers are distilled (config.teacher_layers)."""
    return ("click",) if config.teacher_layers == "click" else TASKS


class PerStudentEarlyStopping(tf_keras.callbacks.Callback):
    """Each student keeps the weights of its own best validation click AUC (`val_auc_<scenario>`).

    Training stops when no student has improved for `patience` epochs; at the end every
    student gets its own best weights back. `best_epochs` records each one's (1-based).
    """

    def __init__(self, students: Mapping[str, tf_keras.Model], patience: int):
        super().__init__()
        self.students = dict(students)
        self.patience = int(patience)
        self.best, self.best_weights, self.best_epochs, self.wait = {}, {}, {}, 0

    def on_train_begin(self, logs=None):
        self.best, self.best_weights, self.best_epochs, self.wait = {}, {}, {}, 0

    def on_epoch_end(self, epoch, logs=None):
        improved = False
        for sid, student in self.students.items():
            value = (logs or {}).get(f"val_auc_{sid}")
            if value is None:
                raise KeyError(f"val_auc_{sid} is not logged: per-student early stopping needs validation data")
            if sid not in self.best or value > self.best[sid]:
                self.best[sid], self.best_epochs[sid] = float(value), epoch + 1
                self.best_weights[sid] = student.get_weights()
                improved = True
        self.wait = 0 if improved else self.wait + 1
        if self.wait >= self.patience:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        for sid, weights in self.best_weights.items():
            self.students[sid].set_weights(weights)


def pca_rows(table: np.ndarray, width: int) -> np.ndarray:
    """The rows of `table` ([V, D]) in its top-`width` principal directions: [V, min(width, D)].

    The directions come from the centred table; the rows are projected uncentred, so a
    common offset (e.g. a popular region) survives.
    """
    table = np.asarray(table, np.float64)
    _, _, vt = np.linalg.svd(table - table.mean(axis=0), full_matrices=False)
    return (table @ vt[:min(width, table.shape[1])].T).astype(np.float32)


def teacher_embedding_init(students: Mapping[str, tf_keras.Model], teacher) -> Dict[str, List[str]]:
    """Beyond the paper: each built student's id tables that the teacher also has start from its values.

    A table is taken when the teacher embeds a feature of that name with the same
    vocabulary size; it is reduced to the student's width by `pca_rows` (a student
    wider than the teacher keeps its own initial values in the extra columns).
    Returns {scenario: [tables initialised]}.
    """
    done = {}
    for sid, student in students.items():
        done[sid] = []
        for table, layer in student.inputs_layer.embeddings.items():
            source = teacher.embeddings.get(table)
            if source is None or source.input_dim != layer.input_dim:
                continue
            values = layer.embeddings.numpy()
            reduced = pca_rows(source.embeddings.numpy(), layer.output_dim)
            values[:, :reduced.shape[1]] = reduced
            layer.embeddings.assign(values)
            done[sid].append(table)
    return done


def layer_widths(layers: List[tf.Tensor]) -> List[int]:
    return [int(x.shape[-1]) for x in layers]
