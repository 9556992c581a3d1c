"""Adding a model is one registry entry: a toy Keras model, registered here and nowhere else, goes
through the pipeline's Trainer, ModelEvaluator, pusher and EvaluationReport on the session's
small Transform."""

import dataclasses
import glob
import json
import os

import pytest
import tensorflow as tf
import tf_keras

from models import registry
from models.configs import FromDict
from models.multitask import TASKS, MultiTaskSteps, task_metrics

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@dataclasses.dataclass(frozen=True)
class ToyConfig(FromDict):
    units: int = 8
    batch_size: int = 128
    learning_rate: float = 1e-2


class ToyModel(MultiTaskSteps, tf_keras.Model):
    """The scenario's and the user's embeddings, one hidden layer, a logit per task."""

    CONFIG_CLASS = ToyConfig

    def __init__(self, config, vocab_sizes, **kwargs):
        super().__init__(**kwargs)
        self.config, self.vocab_sizes = config, dict(vocab_sizes)
        self.embed = {n: tf_keras.layers.Embedding(vocab_sizes[n], 4) for n in ("scenario_id", "user_id")}
        self.hidden = tf_keras.layers.Dense(config.units, activation="relu")
        self.logits = tf_keras.layers.Dense(len(TASKS))
        self.loss_tracker, self.auc = task_metrics()

    def call(self, features, training=None):
        x = tf.concat([self.embed[n](tf.reshape(features[n], [-1])) for n in self.embed], axis=-1)
        logits = self.logits(self.hidden(x))
        out = {f"{t}_logit": logits[:, i] for i, t in enumerate(TASKS)}
        return {**out, **{t: tf.sigmoid(out[f"{t}_logit"]) for t in TASKS}}


@pytest.fixture
def toy_registered():
    registry.register(registry.ModelEntry("toy", "unified", f"{__name__}.ToyModel", f"{__name__}.ToyConfig"))
    yield
    registry.unregister("toy")


def test_a_registered_toy_model_is_trained_evaluated_pushed_and_reported(toy_registered, transformed, tmp_path):
    from tfx import v1 as tfx

    from pipelines.keep_samd import create_pipeline
    from pipelines.options import PipelineOptions

    data, head = transformed
    options = PipelineOptions(
        output_dir=str(tmp_path / "runs"), data_root=data, train_steps=20, eval_steps=2, epochs=2,
        keep={"batch_size": 128}, samd={"enabled": False}, downstream={"enabled": False},
        unified={"models": ["toy"], "configs": {"toy": {"units": 4}}}, blessing={"margin": -1.0})
    pipeline = create_pipeline(options, imported=head)
    assert {"ToyTrainer", "ToyEvaluator", "ToyPusher"} <= {c.id for c in pipeline.components}
    tfx.orchestration.LocalDagRunner().run(pipeline)

    root = os.path.join(options.pipeline_root)
    (training,) = glob.glob(os.path.join(root, "ToyTrainer", "model", "*", "training.json"))
    with open(training) as f:
        record = json.load(f)
    assert record["model"] == "toy" and record["batch_size"] == ToyConfig.batch_size  # its own: no unified batch
    assert record["epochs"] >= 1 and record["examples_seen"] > 0
    (pushed,) = glob.glob(os.path.join(options.serving_model_dir("toy"), "*", "saved_model.pb"))
    served = tf.saved_model.load(os.path.dirname(pushed)).signatures["serving_default"]
    assert set(served.structured_outputs) == set(TASKS)
    with open(os.path.join(options.serving_dir, "models.config")) as f:
        assert 'name: "toy"' in f.read()
    (metrics,) = glob.glob(os.path.join(root, "EvaluationReport", "report", "*", "metrics.json"))
    with open(metrics) as f:
        reported = json.load(f)["models"]
    assert list(reported) == ["keep_general", "toy"]
    assert 0.0 < reported["toy"]["metrics"]["ALL"]["click"]["auc"] < 1.0
