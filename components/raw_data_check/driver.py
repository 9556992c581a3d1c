"""Driver of RawDataCheck: the data folder's fingerprint, so TFX's cache sees a changed file.

RawDataCheck reads a folder named by a string, not an artifact: its cache key would
be the same however the files changed. Like ExampleGen's driver (which puts
`input_fingerprint` into ExampleGen's exec properties), this driver runs before the
cache lookup and adds `input_fingerprint`: every file under the data root (the span
folders' CSVs and scenarios.csv) with its size and modification time, through fileio.
A changed, added or removed file makes a new key, so the check runs again and the
components that read its artifacts, with it.
"""

import hashlib
import os

from tfx.dsl.io import fileio
from tfx.dsl.components.base import base_driver
from tfx.orchestration import data_types_utils
from tfx.proto.orchestration import driver_output_pb2

from components.keys import DATA_ROOT_KEY, INPUT_FINGERPRINT_KEY


def data_fingerprint(data_root: str) -> str:
    """sha256 over (relative path, size, mtime) of every file under data_root; a missing folder has its own."""
    digest = hashlib.sha256()
    if not fileio.exists(data_root):
        return f"missing:{data_root}"
    for folder, _, files in sorted(fileio.walk(data_root)):
        for name in sorted(files):
            path = os.path.join(folder, name)
            stat = fileio.stat(path)
            digest.update(f"{os.path.relpath(path, data_root)}\0{stat.length}\0{stat.mtime_nsec}\n".encode())
    return digest.hexdigest()


class Driver(base_driver.BaseDriver):
    """The IR-based `run` (what the local and Beam DAG runners call), as ExampleGen's FileBasedDriver has."""

    def run(self, execution_info) -> driver_output_pb2.DriverOutput:
        output = driver_output_pb2.DriverOutput()
        properties = dict(execution_info.exec_properties)
        properties[INPUT_FINGERPRINT_KEY] = data_fingerprint(properties[DATA_ROOT_KEY])
        for key, value in properties.items():
            if value is not None:
                data_types_utils.set_metadata_value(output.exec_properties[key], value)
        return output
