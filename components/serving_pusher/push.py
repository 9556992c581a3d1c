"""Pushing a SavedModel as one TF Serving version, never visible half-written.

The rule, by filesystem:

* local / POSIX (a path without a scheme): the version is copied into a hidden
  temporary sibling (`<base>/.tmp-<version>-<id>`, not an integer, so no model
  server loads it) and renamed into place. The rename is atomic, so a server
  scanning `<base>` sees no version folder or a complete one.
* object stores and other URIs (gs://, s3://, hdfs://, ram://): a "folder" is a
  prefix and `rename` copies object by object, which is not atomic. The files are
  copied straight to `<base>/<version>/` with `saved_model.pb` last (TensorFlow
  Serving's and TFX's Pusher's completeness mark); the model server must also wait
  for the folder to be stable (serving/versions.py documents its rule).
"""

import os
import uuid

from tfx.dsl.io import fileio

from models import artifact_io

SAVED_MODEL_PB = "saved_model.pb"


def _has_scheme(path: str) -> bool:
    return "://" in path


def push_saved_model(source: str, base_directory: str, version: int) -> str:
    """Copies the SavedModel folder `source` to `<base_directory>/<version>/`; returns that path."""
    target = os.path.join(base_directory, str(int(version)))
    if fileio.exists(target):
        raise FileExistsError(f"{target}: version already pushed")
    if not fileio.exists(os.path.join(source, SAVED_MODEL_PB)):
        raise FileNotFoundError(f"{source}: no {SAVED_MODEL_PB} to push")
    fileio.makedirs(base_directory)
    if _has_scheme(base_directory):
        artifact_io.copy_tree(source, target, last=(SAVED_MODEL_PB,))
        return target
    tmp = os.path.join(base_directory, f".tmp-{int(version)}-{uuid.uuid4().hex[:8]}")
    try:
        artifact_io.copy_tree(source, tmp, last=(SAVED_MODEL_PB,))
        os.rename(tmp, target)  # local-path: atomic on one local filesystem (see the module docstring)
    finally:
        artifact_io.rmtree(tmp)
    return target


# The PushedModel properties TFX's Pusher sets (pipelines/console.py reads them); set here
# through the public Artifact API, as TFX keeps its own setters private.
PUSHED_KEY = "pushed"
PUSHED_DESTINATION_KEY = "pushed_destination"
PUSHED_VERSION_KEY = "pushed_version"


def mark_pushed(pushed_model, destination: str, version: str) -> None:
    pushed_model.set_int_custom_property(PUSHED_KEY, 1)
    pushed_model.set_string_custom_property(PUSHED_DESTINATION_KEY, destination)
    pushed_model.set_string_custom_property(PUSHED_VERSION_KEY, version)


def mark_not_pushed(pushed_model) -> None:
    pushed_model.set_int_custom_property(PUSHED_KEY, 0)
