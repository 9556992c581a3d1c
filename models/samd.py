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

Readings of the paper:
* Dimension of W_d^i. The text prints W_d^i ∈ R^{M_g×M_g×M_g×M_i}, which cannot
  multiply g's M_g×M_g output into the stated W_T^i ∈ R^{M_g×M_i}. We read it as
  g(·) ∈ R^{M_g×M_g} (reshaped from the MLP's output) and W_d^i ∈ R^{M_g×M_i}, so
  W_T^i = g(T_i ⊕ C_i) · W_d^i is a matrix product; W_d^i is a trainable plug-in
  per scenario, as the paper says.
* Normalisation. The constraint sum_m w_mn = 1 is met with a softmax over the
  student's layers for each teacher layer (weights stay positive).
* Training of T. The paper pre-trains T offline and refreshes it weekly without
  naming the objective. Here T's parameters (attribute embeddings, W_exp, W_imp,
  W_sim) are trained jointly with the meta network through the distillation loss
  of Equation 11, in the same run; the learnt T_i are saved with W_T^i so a later
  run could start from them. `explicit=False` replaces the attribute embeddings by
  a free per-scenario embedding; `implicit=False` drops IR_i (the paper's ablations).
* Teacher layers. The KEEP model's shared bottom (embeddings + attention, the input
  of every tower) and the hidden layers of its three task towers: M_g = 1 + 3 × depth.
* Scale. L_fd is averaged over the teacher's layers (Σ_n Σ_m w_mn L_mn / M_g), so its
  size does not grow with M_g; `distill_weight` weighs it against the cross-entropy.
* Projections. Φ_i (per student layer) is a trainable dense map to
  `projection_dim`; Φ_g (per teacher layer) is a fixed random projection. Both are
  followed by a parameter-free layer normalisation. A trainable Φ_g could collapse
  both sides to a constant and zero the loss; a fixed one keeps the target honest.
* Strategies (the ablation table): `meta` (the paper's), `no_cluster` (C_i dropped
  from g's input), `all2all` (w_mn = 1/M_i) and `similarity` (w_mn from the linear
  CKA between layer outputs on the batch, normalised over m, no gradient).

Example:
    distiller = SamdDistiller(SamdConfig(), teacher, students, scenarios)
    distiller.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
    distiller.fit(per_scenario_batches, ...)   # a tuple of N feature dicts per step
    distiller.transfer_weights()                # {scenario: W_T^i as an array}
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from models.keep import pointwise_loss

STRATEGIES = ("meta", "no_cluster", "all2all", "similarity")


@dataclasses.dataclass(frozen=True)
class SamdConfig:
    strategy: str = "meta"
    explicit: bool = True
    implicit: bool = True
    scenario_dim: int = 16  # d: T_i, C_i, E_k (paper: 16 for scenario features)
    attribute_dim: int = 8
    num_clusters: int = 3  # K (paper: 3 on AliExpress)
    meta_units: Tuple[int, ...] = (64, 32, 16)  # g (paper: 64-32-16)
    projection_dim: int = 32
    distill_loss: str = "l2"  # "l2" or "mmd"
    distill_weight: float = 1.0
    learning_rate: float = 1e-3  # paper: 1e-4 on far larger data
    batch_size: int = 256  # per scenario, per step (paper: 512)
    top_g: int = 2  # paper: 2 on AliExpress

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown SAMD strategy {self.strategy!r}; one of {STRATEGIES}")
        if self.distill_loss not in ("l2", "mmd"):
            raise ValueError(f"unknown distillation loss {self.distill_loss!r}; 'l2' or 'mmd'")

    @classmethod
    def from_dict(cls, overrides: Optional[Mapping] = None) -> "SamdConfig":
        overrides = dict(overrides or {})
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown SamdConfig field(s): {sorted(unknown)}")
        if "meta_units" in overrides:
            overrides["meta_units"] = tuple(overrides["meta_units"])
        return cls(**overrides)


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
    """W_T^i = g(T_i ⊕ C_i) W_d^i, softmax-normalised over the student's layers (Equation 9)."""

    def __init__(self, teacher_layers: int, student_layers: Sequence[int], units=(64, 32, 16), **kwargs):
        super().__init__(**kwargs)
        self.teacher_layers = teacher_layers
        self.student_layers = list(student_layers)
        self.units = tuple(units)
        self.g = [tf_keras.layers.Dense(u, activation="relu") for u in self.units]
        self.g_out = tf_keras.layers.Dense(teacher_layers * teacher_layers, name="g_out")
        self.plug_ins = [
            # Zero start: W_T^i begins uniform (all2all) and the same for all scenarios.
            self.add_weight(name=f"w_d_{i}", shape=(teacher_layers, m), initializer="zeros")
            for i, m in enumerate(self.student_layers)
        ]

    def call(self, scenario_inputs):
        h = scenario_inputs
        for dense in self.g:
            h = dense(h)
        general = tf.reshape(self.g_out(h), [-1, self.teacher_layers, self.teacher_layers])  # g(·): M_g x M_g
        return [tf.nn.softmax(general[i] @ w_d, axis=-1) for i, w_d in enumerate(self.plug_ins)]  # Equation 9

    def get_config(self):
        return {**super().get_config(), "teacher_layers": self.teacher_layers,
                "student_layers": self.student_layers, "units": self.units}


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
                                 name="meta_function")
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
        self.auc = {s: tf_keras.metrics.AUC(name=f"auc_{s}") for s in self.scenario_ids}

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

    def distillation_loss(self, sid, weights, student_layers, teacher_layers):
        """Equation 10: sum_m sum_n w_mn L(Φ_i(F_i^m), Φ_g(F_g^n)); weights are [M_g, M_i]."""
        dist = l2_distance if self.config.distill_loss == "l2" else mmd_distance
        phi_s = [_layer_norm(p(x)) for p, x in zip(self.student_projections[sid], student_layers)]
        phi_t = [_layer_norm(x @ p) for p, x in zip(self.teacher_projections, teacher_layers)]
        losses = tf.stack([tf.stack([dist(s, t) for s in phi_s]) for t in phi_t])  # [M_g, M_i]
        # Averaged over teacher layers (each row of weights sums to 1), so L_fd stays on the
        # scale of one layer pair whatever M_g is, comparable to the cross-entropy.
        return tf.reduce_sum(weights * losses) / len(phi_t)

    def _scenario_loss(self, i, sid, features, meta_weights, training):
        teacher_layers = [tf.stop_gradient(x) for x in self.teacher.teacher_layers(features, training=False)]
        student = self.students[sid]
        student_layers, logits = student.forward(features, training=training)
        weights = self._weights(i, meta_weights, student_layers, teacher_layers)
        fd = self.distillation_loss(sid, weights, student_layers, teacher_layers)
        ce = 0.0
        for task, logit in logits.items():
            population = None if task == "click" else tf.cast(features["click"], tf.float32)
            ce += pointwise_loss(tf.cast(features[task], tf.float32), logit, population)
        return fd, ce, tf.sigmoid(logits["click"])

    def _step(self, data, training):
        _, _, _, meta_weights = self.scenario_state()
        total_fd, total_ce = 0.0, 0.0
        for i, sid in enumerate(self.scenario_ids):
            fd, ce, p_click = self._scenario_loss(i, sid, data[i], meta_weights, training)
            total_fd += fd
            total_ce += ce
            self.auc[sid].update_state(data[i]["click"], p_click)
        return self.config.distill_weight * total_fd + total_ce, total_fd, total_ce  # Equation 11

    def train_step(self, data):
        with tf.GradientTape() as tape:
            loss, fd, ce = self._step(data, training=True)
        variables = self.trainable_variables
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(
            [(g, v) for g, v in zip(grads, variables) if g is not None])
        return self._update(loss, fd, ce)

    def test_step(self, data):
        return self._update(*self._step(data, training=False))

    def _update(self, loss, fd, ce):
        self.loss_tracker.update_state(loss)
        self.fd_tracker.update_state(fd)
        self.ce_tracker.update_state(ce)
        return {m.name: m.result() for m in self.metrics}

    @property
    def metrics(self):
        return [self.loss_tracker, self.fd_tracker, self.ce_tracker] + [self.auc[s] for s in self.scenario_ids]

    def call(self, data, training=None):
        return self._step(data, training)[0]

    def transfer_report(self) -> Dict:
        """W_T^i, T_i, C_i and p_i of every scenario, as plain lists (for the evaluation report)."""
        t, c, p, w = self.scenario_state()
        report = {"strategy": self.config.strategy, "scenarios": {}}
        for i, sid in enumerate(self.scenario_ids):
            report["scenarios"][sid] = {
                "transfer_weights": w[i].numpy().tolist() if self.config.strategy in ("meta", "no_cluster") else None,
                "scenario_representation": t[i].numpy().tolist(),
                "cluster_representation": c[i].numpy().tolist(),
                "cluster_assignment": p[i].numpy().tolist(),
            }
        return report

    def get_config(self):
        return {"config": dataclasses.asdict(self.config)}


def layer_widths(layers: List[tf.Tensor]) -> List[int]:
    return [int(x.shape[-1]) for x in layers]
