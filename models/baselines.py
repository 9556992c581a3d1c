"""Baselines the unified multi-scenario, multi-task models are measured against.

* `SharedBottomModel`: one MLP over all scenarios' rows (the scenario id is a feature),
  one tower per task.
* `MMoEModel`: multi-gate mixture of experts over all scenarios' rows, one gate and
  one tower per task.
The third baseline of the papers, a DNN per scenario trained on its scenario alone,
is SAMD's "alone" run (`bench/samd.py`): the same students without distillation.

Both read the same general features as PEPNet, ADL and GRec, with comparable sizes,
and train with the KEEP point loss per task (conversion and cart over clicks).

Example:
    model = build_baseline("mmoe", BaselineConfig(), vocab_sizes)
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
    model.fit(dataset)  # transformed feature dicts with the labels inside
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Tuple

import tensorflow as tf
import tf_keras

from models import features as F
from models.configs import EMBEDDING_DIM, LEARNING_RATE, Choice, FromDict
from models.multitask import TASKS, MultiTaskSteps, task_metrics
from models.students import StudentInput

# PEPNet's domain statistics included: every unified model and baseline may read them (equal inputs).
GENERAL_FEATURES = ("user_id", "item_id", "category_id", "shop_id", "scenario_id", "user_gender", "user_age_bucket",
                    "hour", "item_price", "hist_item_ids", "hist_category_ids") + F.DOMAIN_STATISTICS


@dataclasses.dataclass(frozen=True)
class BaselineConfig(FromDict):
    features: Tuple[str, ...] = GENERAL_FEATURES
    embedding_dim: int = 16
    bottom_units: Tuple[int, ...] = (128, 64)  # shared bottom / each expert
    tower_units: Tuple[int, ...] = (32,)
    num_experts: int = 4  # MMoE
    # DLRM's pairwise dot products of the embedded fields after the embeddings (models.students.StudentInput);
    # the papers' baselines have none (docs/models.md: why they are on here).
    dot_interaction: bool = True
    learning_rate: float = 3e-3  # bench/results/learning_rate.json
    batch_size: int = 512


class MultiTaskModel(MultiTaskSteps, tf_keras.Model):
    """A baseline: `logits(features)` -> {task: logit}; the point loss per task."""

    CONFIG_CLASS = BaselineConfig

    def __init__(self, config, vocab_sizes: Mapping[str, int], **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.vocab_sizes = {k: int(v) for k, v in vocab_sizes.items()}
        self.loss_tracker, self.auc = task_metrics()

    def logits(self, features, training=None):
        raise NotImplementedError

    def call(self, features, training=None):
        logits = self.logits(features, training)
        out = {t: tf.sigmoid(logits[t]) for t in TASKS}
        out.update({f"{t}_logit": logits[t] for t in TASKS})
        return out


def _mlp(units, name):
    return [tf_keras.layers.Dense(u, activation="relu", name=f"{name}_{i}") for i, u in enumerate(units)]


class SharedBottomModel(MultiTaskModel):
    # The Tuner's: rate and width (BaselineConfig has no regulariser, its layer widths are tuples).
    SEARCH_SPACE = {"learning_rate": LEARNING_RATE, "embedding_dim": EMBEDDING_DIM}

    def __init__(self, config: BaselineConfig, vocab_sizes, **kwargs):
        super().__init__(config, vocab_sizes, name=kwargs.pop("name", "shared_bottom"), **kwargs)
        self.inputs_layer = StudentInput(config.features, vocab_sizes, config.embedding_dim, config.dot_interaction,
                                         name="inputs")
        self.bottom = _mlp(config.bottom_units, "bottom")
        self.towers = {t: _mlp(config.tower_units, f"tower_{t}") + [tf_keras.layers.Dense(1, name=f"logit_{t}")]
                       for t in TASKS}

    def logits(self, features, training=None):
        x = self.inputs_layer(features)
        for layer in self.bottom:
            x = layer(x)
        out = {}
        for t, tower in self.towers.items():
            h = x
            for layer in tower:
                h = layer(h)
            out[t] = tf.squeeze(h, -1)
        return out


class MMoEModel(MultiTaskModel):
    SEARCH_SPACE = {**SharedBottomModel.SEARCH_SPACE, "num_experts": Choice(2, 4, 8)}

    def __init__(self, config: BaselineConfig, vocab_sizes, **kwargs):
        super().__init__(config, vocab_sizes, name=kwargs.pop("name", "mmoe"), **kwargs)
        self.inputs_layer = StudentInput(config.features, vocab_sizes, config.embedding_dim, config.dot_interaction,
                                         name="inputs")
        self.experts = [_mlp(config.bottom_units, f"expert_{e}") for e in range(config.num_experts)]
        self.gates = {t: tf_keras.layers.Dense(config.num_experts, activation="softmax", name=f"gate_{t}")
                      for t in TASKS}
        self.towers = {t: _mlp(config.tower_units, f"tower_{t}") + [tf_keras.layers.Dense(1, name=f"logit_{t}")]
                       for t in TASKS}

    def logits(self, features, training=None):
        x = self.inputs_layer(features)
        outs = []
        for expert in self.experts:
            h = x
            for layer in expert:
                h = layer(h)
            outs.append(h)
        experts = tf.stack(outs, axis=1)  # [B, E, W]
        out = {}
        for t in TASKS:
            h = tf.einsum("be,bew->bw", self.gates[t](x), experts)
            for layer in self.towers[t]:
                h = layer(h)
            out[t] = tf.squeeze(h, -1)
        return out


BASELINES = {"shared_bottom": SharedBottomModel, "mmoe": MMoEModel}


def build_baseline(name: str, config: BaselineConfig, vocab_sizes: Mapping[str, int]) -> MultiTaskModel:
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; one of {sorted(BASELINES)}")
    return BASELINES[name](config, vocab_sizes)


def id_features(config: BaselineConfig):
    return tuple(n for n in config.features if n not in F.NUMERIC_FEATURES)
