"""The keep_samd TFX pipeline: definition, options and runners."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf.Transform's Keras layer is tf_keras
