"""Keras plumbing shared by the click / conversion / cart models (KEEP, PEPNet, ADL, GRec, baselines).

`MultiTaskSteps` is a mixin for a `tf_keras.Model` whose `call` returns per-task
probabilities and `<task>_logit`s. It gives the model the multi-task loss
(`compute_losses`: each task's loss over its population, conversion and cart over
clicked rows, summed, plus the layers' own losses), `train_step` / `test_step` (one
optimizer over every trainable variable), the metrics `loss` and `auc_<task>` (gated as
the loss is), and `get_config` / `from_config` through the model's `CONFIG_CLASS` (a
frozen dataclass with `from_dict`), and a `SEARCH_SPACE` of its config's fields for the Tuner. A model changes only what its paper defines:
`task_loss` (KEEP adds its pairwise term), `task_weights` (GRec's upsampling).

Example:
    class MyModel(MultiTaskSteps, tf_keras.Model):
        CONFIG_CLASS = MyConfig
        def __init__(self, config, vocab_sizes):
            super().__init__()
            self.config, self.vocab_sizes = config, dict(vocab_sizes)
            self.loss_tracker, self.auc = task_metrics()
"""

import dataclasses

import tensorflow as tf
import tf_keras


TASKS = ("click", "conversion", "cart")
# Which label gates a task's training rows: conversion and cart are learnt over clicks.
TASK_POPULATION = {"click": None, "conversion": "click", "cart": "click"}


def pointwise_loss(labels, logits, population=None):
    """Mean cross-entropy (KEEP's Equation 1), over the rows where `population` is 1 (or weighted by it)."""
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    w = tf.ones_like(ce) if population is None else population
    return tf.math.divide_no_nan(tf.reduce_sum(ce * w), tf.reduce_sum(w))


def task_metrics():
    """(loss tracker, {task: AUC}) for a model's `loss_tracker` and `auc` attributes."""
    return tf_keras.metrics.Mean(name="loss"), {t: tf_keras.metrics.AUC(name=f"auc_{t}") for t in TASKS}


class MultiTaskSteps:
    CONFIG_CLASS = None
    # {config field: models.configs.LogRange or Choice}: what the Tuner searches (trainers/tuner.py); None:
    # the model is not tuned.
    SEARCH_SPACE = None

    def task_weights(self, features, task):
        """Row weights of `task`'s loss: None (every row) or its population's labels."""
        gate = TASK_POPULATION[task]
        return None if gate is None else tf.cast(features[gate], tf.float32)

    def task_loss(self, features, outputs, task, weights):
        """One task's loss: the pointwise cross-entropy."""
        return pointwise_loss(tf.cast(features[task], tf.float32), outputs[f"{task}_logit"], weights)

    def compute_losses(self, features, outputs):
        total = 0.0
        for t in TASKS:
            total += self.task_loss(features, outputs, t, self.task_weights(features, t))
        return total + tf.add_n(self.losses) if self.losses else total  # the layers' own (GRec's load balance)

    def _update_metrics(self, features, outputs, loss):
        self.loss_tracker.update_state(loss)
        for t in TASKS:
            gate = TASK_POPULATION[t]
            w = None if gate is None else features[gate]
            self.auc[t].update_state(features[t], outputs[t], sample_weight=w)
        return {m.name: m.result() for m in self.metrics}

    def compile(self, optimizer=None, **kwargs):
        """Without an optimizer: Adam at the config's learning rate (PEPNet's own pair overrides this)."""
        super().compile(optimizer=optimizer or tf_keras.optimizers.Adam(self.config.learning_rate), **kwargs)

    def train_step(self, data):
        with tf.GradientTape() as tape:
            outputs = self(data, training=True)
            loss = self.compute_losses(data, outputs)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return self._update_metrics(data, outputs, loss)

    def test_step(self, data):
        outputs = self(data, training=False)
        return self._update_metrics(data, outputs, self.compute_losses(data, outputs))

    @property
    def metrics(self):
        return [self.loss_tracker] + [self.auc[t] for t in TASKS]

    def get_config(self):
        return {"config": dataclasses.asdict(self.config), "vocab_sizes": dict(self.vocab_sizes)}

    @classmethod
    def from_config(cls, cfg):
        return cls(cls.CONFIG_CLASS.from_dict(cfg["config"]), cfg["vocab_sizes"])
