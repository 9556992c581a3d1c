"""Custom TFX components of the keep_samd pipeline (each: component.py + executor.py)."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
