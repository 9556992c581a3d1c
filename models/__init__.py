"""Models of keep_samd, one module per paper idea. Reads transformed features; never imports pipelines/."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf.Transform's Keras layer is tf_keras
