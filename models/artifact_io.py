"""Reading and writing artifact files through TFX's `fileio` (local, gs://, s3://, hdfs://, ram://).

Every custom executor and trainer reads and writes its artifacts through these helpers
or `fileio` itself, never `open`/`os`/`glob`/`shutil`: an artifact URI on Vertex AI or
Kubeflow is a bucket path that the builtins cannot see (tests/components/test_file_apis.py
checks). It lives in models/ so that the trainers, which may not import components/, use
it too.

Writes are atomic where the filesystem allows it: the text goes to a temporary sibling,
then a rename replaces the target. On a local or POSIX filesystem that rename is atomic;
on object stores (gs://, s3://) `rename` is a copy and a delete, and a single-object
write is itself atomic, so a reader sees the old or the new file, never half of one.
"""

import io
import json
import os
import uuid
from typing import Any, Iterable, List

from tfx.dsl.io import fileio


def write_text(path: str, text: str) -> None:
    """Writes `text` (UTF-8) to `path` atomically (temporary sibling, then rename), creating the folder."""
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str, data: bytes) -> None:
    folder = os.path.dirname(path)
    if folder:
        fileio.makedirs(folder)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:8]}")
    with fileio.open(tmp, "wb") as f:
        f.write(data)
    fileio.rename(tmp, path, overwrite=True)


def read_text(path: str) -> str:
    if not fileio.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    with fileio.open(path, "r") as f:
        return f.read()


def read_bytes(path: str) -> bytes:
    if not fileio.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    with fileio.open(path, "rb") as f:
        return f.read()


class _GFileRaw(io.RawIOBase):
    """A GFile as a raw stream, for readers (Arrow) that want a standard file object."""

    def __init__(self, path: str):
        self._f = fileio.open(path, "rb")

    def readable(self):
        return True

    def readinto(self, buffer):
        data = self._f.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self):
        if not self.closed:
            self._f.close()
        super().close()


def open_stream(path: str, buffer_size: int = 1 << 22) -> io.BufferedReader:
    """`path` as a buffered binary file object on any filesystem fileio supports."""
    return io.BufferedReader(_GFileRaw(path), buffer_size)


def write_json(path: str, obj: Any, **kwargs) -> None:
    kwargs.setdefault("indent", 1)
    write_text(path, json.dumps(obj, **kwargs))


def read_json(path: str) -> Any:
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None


def touch(path: str) -> None:
    write_text(path, "")


def list_names(folder: str) -> List[str]:
    """The entry names in `folder` (no trailing '/', sorted); [] when it does not exist."""
    if not fileio.isdir(folder):
        return []
    return sorted(name.rstrip("/") for name in fileio.listdir(folder))


def folders_with(folder: str, file_name: str) -> List[str]:
    """The names of `folder`'s sub-folders that hold `file_name` (e.g. a SAMD model's per-scenario SavedModels)."""
    return [d for d in list_names(folder) if fileio.exists(os.path.join(folder, d, file_name))]


def glob(pattern: str) -> List[str]:
    return sorted(fileio.glob(pattern))


def rmtree(path: str) -> None:
    if fileio.exists(path):
        fileio.rmtree(path)


def copy_tree(source: str, target: str, last: Iterable[str] = ()) -> None:
    """Copies the folder `source` to `target` (which must not exist); files named in `last` go last."""
    last = set(last)
    deferred = []
    for folder, _, files in fileio.walk(source):
        rel = os.path.relpath(folder, source)
        out = target if rel == "." else os.path.join(target, rel)
        fileio.makedirs(out)
        for name in files:
            pair = (os.path.join(folder, name), os.path.join(out, name))
            if name in last:
                deferred.append(pair)
            else:
                fileio.copy(*pair, overwrite=True)
    for src, dst in deferred:
        fileio.copy(src, dst, overwrite=True)
