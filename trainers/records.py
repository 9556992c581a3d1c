"""What a trainer writes beside a model: the budget it got (training.json); and the seeding that
makes its result depend on its seed, not on the run."""

import os

import numpy as np
import tf_keras

from models.artifact_io import write_json

TRAINING_FILE = "training.json"


def optimizer_names(model) -> str:
    """The optimizer(s) a compiled model trains with, e.g. "Adam(0.001)" or "Adagrad(0.05) + Adam(0.001)"."""
    def name(o):
        return f"{type(o).__name__}({float(tf_keras.backend.get_value(o.learning_rate)):g})"

    extra = getattr(model, "embedding_optimizer", None)
    return (f"{name(extra)} embeddings + " if extra is not None else "") + name(model.optimizer)


def write_training_record(serving_model_dir: str, record) -> None:
    """<model artifact>/training.json: the budget a model got, for the evaluator and the report."""
    write_json(os.path.join(os.path.dirname(serving_model_dir.rstrip("/")), TRAINING_FILE), record)


def learning_curves(history) -> dict:
    """{metric: its value per epoch} of a Keras History, as JSON takes it."""
    return {k: [float(x) for x in v] for k, v in history.history.items()}


def budget_record(model, history, batch: int, steps_per_epoch: int, monitor: str = "val_auc_click",
                  mode: str = "max") -> dict:
    """Examples seen, epochs run, best epoch (the one restored), parameters and optimizer of a fitted model.

    `batch`: training examples per step (SAMD: the per-scenario batch times the scenarios).
    """
    epochs = len(history.history.get("loss", []))
    scores = history.history.get(monitor) or []
    pick = max if mode == "max" else min
    return {"batch_size": int(batch), "steps_per_epoch": int(steps_per_epoch), "epochs": epochs,
            "best_epoch": int(pick(range(len(scores)), key=scores.__getitem__)) + 1 if scores else None,
            "examples_seen": int(epochs * steps_per_epoch * batch),
            # trainable only: count_params() would add the AUC metrics' thousands of threshold variables
            "parameters": int(sum(np.prod(v.shape) for v in model.trainable_variables)),
            "optimizer": optimizer_names(model)}


def seed_everything(seed: int) -> int:
    """Seeds Python, NumPy and TensorFlow: benchmarks vary seeds on purpose (bench/quality.py), not by accident."""
    tf_keras.utils.set_random_seed(seed)
    return seed
