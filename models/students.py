"""Heterogeneous per-scenario students for SAMD: DNN, DCN and MMoE on a scenario's own features.

In production every scenario keeps the model its team built: different
architectures, different feature sets (the heterogeneous scenarios see features the
super scenario lacks, and miss others). SAMD distils into all of them at once, so a
student only has to expose its layers (`layer_outputs`, bottom to top, each [batch,
width]) and its task logits.

Which scenario gets which architecture and features is configuration
(`StudentSpec`); `default_student_specs` gives the defaults for the synthetic data and
falls back by scenario role for other data.

Example:
    spec = StudentSpec("banner", "dcn", SUPER_FEATURES)
    student = build_student(spec, vocab_sizes)
    out = student(features)            # {"click": p, "click_logit": s, ...}
    layers = student.layer_outputs(features)
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Mapping, Optional, Sequence, Tuple

import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras

from models import features as F
from models.configs import FromDict

# Transformed features each kind of scenario reads by default.
SUPER_FEATURES = ("user_id", "item_id", "category_id", "shop_id", "user_gender", "user_age_bucket", "hour",
                  "item_price", "hist_item_ids", "hist_category_ids")
PAYMENT_FEATURES = ("user_id", "item_id", "category_id", "pay_channel", "coupon_amount", "member_level",
                    "device_type")
LIVE_FEATURES = ("user_id", "item_id", "shop_id", "live_room_id", "watch_seconds", "member_level", "device_type")
ALL_TASKS = ("click", "conversion", "cart")


@dataclasses.dataclass(frozen=True)
class StudentSpec(FromDict):
    scenario_id: str
    architecture: str  # "dnn", "dcn" or "mmoe"
    features: Tuple[str, ...]
    hidden_units: Tuple[int, ...] = (64, 32)
    embedding_dim: int = 8
    tasks: Tuple[str, ...] = ("click",)
    cross_layers: int = 2  # DCN
    num_experts: int = 3  # MMoE

    def __post_init__(self):
        if self.architecture not in ("dnn", "dcn", "mmoe"):
            raise ValueError(f"scenario {self.scenario_id}: unknown student architecture {self.architecture!r}")
        unknown = set(self.features) - set(F.VOCABULARY) - set(F.INTEGER_CATEGORICAL_MAX) - set(F.NUMERIC_FEATURES)
        if unknown:
            raise ValueError(f"scenario {self.scenario_id}: unknown student feature(s) {sorted(unknown)}")


_DEFAULTS = {
    "home_feed": ("mmoe", SUPER_FEATURES, ALL_TASKS),
    "guess_you_like": ("dnn", SUPER_FEATURES, ("click",)),
    "banner": ("dcn", SUPER_FEATURES, ("click",)),
    "search_feed": ("dcn", SUPER_FEATURES, ("click",)),
    "payment_page": ("mmoe", PAYMENT_FEATURES, ALL_TASKS),
    "live_stream": ("dnn", LIVE_FEATURES, ("click",)),
    "flash_sale": ("dnn", SUPER_FEATURES, ("click",)),
    "coupon_center": ("dcn", SUPER_FEATURES, ("click",)),
}


def default_student_specs(scenarios: Mapping[str, str], overrides: Optional[Mapping] = None) -> Dict[str, StudentSpec]:
    """One spec per scenario ({scenario_id: role}); `overrides` {scenario_id: StudentSpec fields}."""
    specs = {}
    for sid, role in scenarios.items():
        if sid in _DEFAULTS:
            arch, feats, tasks = _DEFAULTS[sid]
        elif role == "heterogeneous":
            arch, feats, tasks = "dnn", ("user_id", "item_id") + F.SCENARIO_SPECIFIC_ID_FEATURES, ("click",)
        else:
            arch, feats, tasks = "dnn", SUPER_FEATURES, ("click",)
        specs[sid] = StudentSpec(sid, arch, feats, tasks=tasks)
    for sid, fields in (overrides or {}).items():
        if sid not in specs:
            raise ValueError(f"student override for unknown scenario {sid!r}")
        specs[sid] = StudentSpec.from_dict({**dataclasses.asdict(specs[sid]), **fields, "scenario_id": sid})
    return specs


class StudentInput(tf_keras.layers.Layer):
    """Embeds a student's features and concatenates them: its first layer.

    Sequences are mean-pooled over non-padded positions (students are small and fast;
    target attention is the teacher's) and share their target's embedding table.
    With `dot_interaction`, DLRM's pairwise dot products of the embedded fields (ids and
    pooled sequences; TFRS's DotInteraction, i < j) follow the embeddings: an MLP over
    concatenated embeddings learns a user-item dot product only slowly (docs/models.md).

    Args:
        feature_names: the transformed features, in the order their blocks are concatenated.
        vocab_sizes: {feature: embedding-table size}.
        embedding_dim: every id field's width.
        dot_interaction: append the fields' pairwise dot products.
    Shapes: {name: [B] or [B, L]} -> [B, sum of the blocks' widths (+ F (F - 1) / 2 for F fields)].
    """

    def __init__(self, feature_names: Sequence[str], vocab_sizes: Mapping[str, int], embedding_dim: int,
                 dot_interaction: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.feature_names = tuple(feature_names)
        self.vocab_sizes = {n: int(vocab_sizes[n]) for n in self.feature_names if n not in F.DENSE_FEATURES}
        self.embedding_dim = embedding_dim
        self.dot_interaction = bool(dot_interaction)
        # Keyed by vocabulary: a history shares its target's table (hist_item_ids -> item_id).
        self.embeddings = {}
        for n, size in self.vocab_sizes.items():
            table = F.VOCABULARY.get(n, n)
            if table not in self.embeddings:
                self.embeddings[table] = tf_keras.layers.Embedding(size, embedding_dim, name=f"embedding_{table}")
        self.dot = (tfrs.layers.feature_interaction.DotInteraction(name="dot_interaction")
                    if self.dot_interaction else None)

    def call(self, features):
        parts, fields = [], []
        for n in self.feature_names:
            if n in F.DENSE_FEATURES:
                parts.append(tf.reshape(tf.cast(features[n], tf.float32), [-1, 1]))
                continue
            if n in F.SEQUENCE_FEATURES:
                ids = features[n]
                mask = tf.cast(ids > 0, tf.float32)[..., None]
                pooled = tf.reduce_sum(self.embeddings[F.VOCABULARY[n]](ids) * mask, 1)
                field = pooled / tf.maximum(tf.reduce_sum(mask, 1), 1.0)
            else:
                field = self.embeddings[F.VOCABULARY.get(n, n)](features[n])
            parts.append(field)
            fields.append(field)
        if self.dot is not None and len(fields) > 1:
            parts.append(self.dot(fields))
        return tf.concat(parts, axis=-1)

    def get_config(self):
        return {**super().get_config(), "feature_names": self.feature_names, "vocab_sizes": self.vocab_sizes,
                "embedding_dim": self.embedding_dim, "dot_interaction": self.dot_interaction}


class Student(tf_keras.Model):
    """Base class: `call` returns per-task probabilities and logits; `layer_outputs` the layers."""

    def __init__(self, spec: StudentSpec, vocab_sizes: Mapping[str, int], **kwargs):
        super().__init__(name=kwargs.pop("name", f"student_{spec.scenario_id}"), **kwargs)
        self.spec = spec
        self.vocab_sizes = {n: int(v) for n, v in vocab_sizes.items()}
        self.inputs_layer = StudentInput(spec.features, vocab_sizes, spec.embedding_dim, name="student_input")

    def forward(self, features, training=None):
        """(layer outputs bottom to top, {task: logit})."""
        raise NotImplementedError

    def layer_outputs(self, features, training=None):
        return self.forward(features, training)[0]

    def call(self, features, training=None):
        _, logits = self.forward(features, training)
        out = {t: tf.sigmoid(s) for t, s in logits.items()}
        out.update({f"{t}_logit": s for t, s in logits.items()})
        return out

    def get_config(self):
        return {"spec": dataclasses.asdict(self.spec), "vocab_sizes": self.vocab_sizes}

    @classmethod
    def from_config(cls, config):
        return cls(StudentSpec.from_dict(config["spec"]), config["vocab_sizes"])


class DNNStudent(Student):
    """Embeddings -> MLP -> one logit per task (shared bottom)."""

    def __init__(self, spec, vocab_sizes, **kwargs):
        super().__init__(spec, vocab_sizes, **kwargs)
        self.hidden = [tf_keras.layers.Dense(u, activation="relu") for u in spec.hidden_units]
        self.heads = {t: tf_keras.layers.Dense(1, name=f"logit_{t}") for t in spec.tasks}

    def forward(self, features, training=None):
        x = self.inputs_layer(features)
        layers = [x]
        for dense in self.hidden:
            x = dense(x)
            layers.append(x)
        return layers, {t: tf.squeeze(h(x), -1) for t, h in self.heads.items()}


class DCNStudent(Student):
    """DCN-v2: a stack of tfrs cross layers, then the MLP, then the logits."""

    def __init__(self, spec, vocab_sizes, **kwargs):
        super().__init__(spec, vocab_sizes, **kwargs)
        self.crosses = [tfrs.layers.dcn.Cross(name=f"cross_{i}") for i in range(spec.cross_layers)]
        self.hidden = [tf_keras.layers.Dense(u, activation="relu") for u in spec.hidden_units]
        self.heads = {t: tf_keras.layers.Dense(1, name=f"logit_{t}") for t in spec.tasks}

    def forward(self, features, training=None):
        x0 = self.inputs_layer(features)
        layers, x = [x0], x0
        for cross in self.crosses:
            x = cross(x0, x)
            layers.append(x)
        for dense in self.hidden:
            x = dense(x)
            layers.append(x)
        return layers, {t: tf.squeeze(h(x), -1) for t, h in self.heads.items()}


class MMoEStudent(Student):
    """MMoE: shared experts, one softmax gate and one tower per task."""

    def __init__(self, spec, vocab_sizes, **kwargs):
        super().__init__(spec, vocab_sizes, **kwargs)
        width = spec.hidden_units[0]
        self.experts = [tf_keras.layers.Dense(width, activation="relu", name=f"expert_{i}")
                        for i in range(spec.num_experts)]
        self.gates = {t: tf_keras.layers.Dense(spec.num_experts, activation="softmax", name=f"gate_{t}")
                      for t in spec.tasks}
        self.towers = {t: [tf_keras.layers.Dense(u, activation="relu") for u in spec.hidden_units[1:]]
                       for t in spec.tasks}
        self.heads = {t: tf_keras.layers.Dense(1, name=f"logit_{t}") for t in spec.tasks}

    def forward(self, features, training=None):
        x = self.inputs_layer(features)
        experts = tf.stack([e(x) for e in self.experts], axis=1)  # [B, E, W]
        layers = [x, tf.reduce_mean(experts, axis=1)]
        logits = {}
        for t in self.spec.tasks:
            h = tf.einsum("be,bew->bw", self.gates[t](x), experts)
            for dense in self.towers[t]:
                h = dense(h)
            layers.append(h)
            logits[t] = tf.squeeze(self.heads[t](h), -1)
        return layers, logits


ARCHITECTURES = {"dnn": DNNStudent, "dcn": DCNStudent, "mmoe": MMoEStudent}


def build_student(spec: StudentSpec, vocab_sizes: Mapping[str, int]) -> Student:
    return ARCHITECTURES[spec.architecture](spec, vocab_sizes)


def student_vocab_features(spec: StudentSpec) -> Tuple[str, ...]:
    """The id features whose vocabulary sizes a student needs."""
    return tuple(n for n in spec.features if n not in F.NUMERIC_FEATURES)
