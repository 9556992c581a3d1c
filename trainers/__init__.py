"""Trainers of keep_samd: the TFX `run_fn`s and their helpers (datasets, warm starts, records).

They build the models of models/ from a typed trainer config and export them; the models
never import a trainer.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf.Transform's Keras layer is tf_keras
