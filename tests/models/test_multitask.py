import numpy as np
import tensorflow as tf
import tf_keras

from models.multitask import TASKS, MultiTaskSteps, task_metrics


class _Fixed(MultiTaskSteps, tf_keras.Model):
    """Logits given by the features (`<task>_score`): the loss alone is under test."""

    def __init__(self):
        super().__init__()
        self.loss_tracker, self.auc = task_metrics()

    def call(self, features, training=None):
        out = {}
        for t in TASKS:
            out[f"{t}_logit"] = tf.cast(features[f"{t}_score"], tf.float32)
            out[t] = tf.sigmoid(out[f"{t}_logit"])
        return out


def _features(seed=0, n=64):
    rng = np.random.default_rng(seed)
    f = {"click": rng.integers(0, 2, n)}
    f["conversion"] = f["click"] * rng.integers(0, 2, n)
    f["cart"] = f["click"] * rng.integers(0, 2, n)
    for t in TASKS:
        f[f"{t}_score"] = rng.normal(size=n)
    return {k: tf.constant(v) for k, v in f.items()}


def _bce(labels, logits):
    labels, logits = np.asarray(labels, float), np.asarray(logits, float)
    return np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))


def test_the_loss_sums_each_tasks_cross_entropy_over_its_population():
    model, f = _Fixed(), _features()
    clicked = f["click"].numpy() == 1
    expected = _bce(f["click"], f["click_score"]).mean()
    for t in ("conversion", "cart"):  # over clicked rows only
        expected += _bce(f[t], f[f"{t}_score"])[clicked].mean()
    np.testing.assert_allclose(float(model.compute_losses(f, model(f))), expected, rtol=1e-5)


def test_unclicked_rows_do_not_move_the_conversion_and_cart_losses():
    model, f = _Fixed(), _features(seed=1)
    before = float(model.compute_losses(f, model(f)))
    unclicked = f["click"].numpy() == 0
    changed = dict(f)
    for t in ("conversion", "cart"):
        changed[f"{t}_score"] = tf.where(unclicked, 10.0 * f[f"{t}_score"], f[f"{t}_score"])
    assert float(model.compute_losses(changed, model(changed))) == before
    changed["click_score"] = f["click_score"] + 1.0
    assert float(model.compute_losses(changed, model(changed))) != before


def test_a_models_task_loss_and_weights_are_its_only_changes():
    class Doubled(_Fixed):
        def task_loss(self, features, outputs, task, weights):
            return 2.0 * super().task_loss(features, outputs, task, weights)

    class ClickOnly(_Fixed):
        def task_weights(self, features, task):
            w = super().task_weights(features, task)
            return w if task == "click" else tf.zeros_like(tf.cast(features["click"], tf.float32))

    f = _features(seed=2)
    plain = float(_Fixed().compute_losses(f, _Fixed()(f)))
    assert float(Doubled().compute_losses(f, Doubled()(f))) == 2.0 * plain
    np.testing.assert_allclose(float(ClickOnly().compute_losses(f, ClickOnly()(f))),
                               _bce(f["click"], f["click_score"]).mean(), rtol=1e-5)
