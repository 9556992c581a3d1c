"""Helpers for executor tests: real artifacts, on the local disk or on a non-local filesystem.

`ram://` is TensorFlow's in-memory filesystem: like gs://, it is reachable only
through tf.io.gfile / TFX's fileio, so an executor that uses `open` or `os.path` on
an artifact URI fails there. (Its directory rename moves no files, which is why
components/serving_pusher/push.py renames only on local paths.)
"""

import os
import uuid

from models import artifact_io


def ram_dir(name: str) -> str:
    """A fresh, empty folder URI on ram://."""
    return f"ram://{uuid.uuid4().hex[:10]}/{name}"


def to_ram(local: str) -> str:
    """A copy of the local folder `local` on ram://; returns its URI."""
    target = ram_dir(os.path.basename(local.rstrip("/")))
    artifact_io.copy_tree(local, target)
    return target


def artifact(cls, uri: str, split_names=None, **custom):
    """An artifact of type `cls` at `uri`, with split names and int/string custom properties."""
    from tfx.types import artifact_utils

    a = cls()
    a.uri = uri
    if split_names:
        a.split_names = artifact_utils.encode_split_names(list(split_names))
    for key, value in custom.items():
        (a.set_int_custom_property if isinstance(value, int) else a.set_string_custom_property)(key, value)
    return a


def local_artifact(cls, uri, split_names=None):
    """`artifact` at a local folder it creates."""
    import os

    a = artifact(cls, str(uri), split_names)
    os.makedirs(a.uri, exist_ok=True)
    return a
