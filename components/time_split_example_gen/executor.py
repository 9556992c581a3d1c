"""Executor of TimeSplitExampleGen: the raw CSVs as tf.Examples, split by day, shuffled in two passes.

TFX's ExampleGen writes each split through a Reshuffle (tfx write_split.py) and
CsvExampleGen infers column types through a side input over every parsed line. The
DirectRunner keeps both in the driver's memory, which ran out at the scale bench's
size (docs/benchmarks.md, transform_example_gen).
This executor keeps ExampleGen's output contract (Split-<name>/data_tfrecord-*.gz of
tf.Examples, split_names, payload and file format; span, version and fingerprint come
from FileBasedExampleGen's driver) and bounds memory by one bucket per worker:

  pass 1, one element per CSV file (`encode.encode_csv`: typed by the pipeline's
    schema, exec property `schema_file`, in Arrow blocks): each row goes to its split
    (`split.TimeSplit`) and to one of B buckets drawn by a generator seeded with the
    file's day folder and name; each (file, split, bucket) is one temporary TFRecord.
  pass 2, one element per (split, bucket): the bucket's temporary files, read in name
    order, are permuted by a generator seeded with (split, bucket) and written as
    Split-<split>/data_tfrecord-<bucket>-of-<B>.gz.

Random buckets and then a uniform permutation inside each give every split a uniformly
random order, as the Reshuffle did (the raw files are ordered by user, and the trainers
shuffle only within a 20k-row buffer). The output is the same for the same files.
B = ceil(CSV bytes / BUCKET_BYTES), so a bucket holds about that much CSV.
"""

import hashlib
import json
import math
import os
from typing import Any, Dict, List, Tuple

import apache_beam as beam
import numpy as np
from tfx.components.util import examples_utils
from tfx.components.example_gen import write_split
from tfx.dsl.components.base import base_beam_executor
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import artifact, artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components import tfx_internals
from components.keys import TIME_SPLIT_KEY
from components.time_split_example_gen import encode
from components.time_split_example_gen.split import SPLITS, SplitError, TimeSplit, day_of_path

BUCKET_BYTES = 128 << 20


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256("\0".join(map(str, parts)).encode()).digest()[:8], "little")


def _bucket_file(tmp: str, split: str, bucket: int, source: str) -> str:
    return os.path.join(tmp, split, f"{bucket:05d}", hashlib.sha256(source.encode()).hexdigest()[:16] + ".tfrecord")


class _ToBuckets(beam.DoFn):
    """Pass 1: one CSV file's rows into per-(split, bucket) temporary TFRecords."""

    def __init__(self, schema_file: str, rule: TimeSplit, bounds: Tuple[int, int], buckets: int, tmp: str):
        self._schema_file, self._rule, self._bounds, self._buckets, self._tmp = schema_file, rule, bounds, buckets, tmp

    def process(self, path: str):
        import tensorflow as tf

        rng = np.random.default_rng(_seed(os.path.basename(os.path.dirname(path)), os.path.basename(path)))
        writers = {}
        try:
            for records, days in encode.encode_csv(path, self._schema_file):
                buckets = rng.integers(0, self._buckets, size=len(records))
                for record, day, bucket in zip(records, days, buckets):
                    split = SPLITS[self._rule.assign(int(day), self._bounds, record)]
                    key = (split, int(bucket))
                    if key not in writers:
                        name = _bucket_file(self._tmp, split, key[1], path)
                        fileio.makedirs(os.path.dirname(name))
                        writers[key] = tf.io.TFRecordWriter(name)
                    writers[key].write(record)
        finally:
            for w in writers.values():
                w.close()


class _ShuffleBucket(beam.DoFn):
    """Pass 2: one (split, bucket)'s rows, permuted, as one output shard."""

    def __init__(self, tmp: str, buckets: int, split_uris: Dict[str, str]):
        self._tmp, self._buckets, self._split_uris = tmp, buckets, split_uris

    def process(self, element: Tuple[str, int]):
        import tensorflow as tf

        split, bucket = element
        folder = os.path.join(self._tmp, split, f"{bucket:05d}")
        files = sorted(fileio.glob(os.path.join(folder, "*.tfrecord"))) if fileio.exists(folder) else []
        records = [r for f in files for r in tf.compat.v1.io.tf_record_iterator(f)]
        if not records and bucket:
            return  # shard 0 is written even when empty, so that every split has a file
        order = np.random.default_rng(_seed(split, bucket)).permutation(len(records))
        name = f"{write_split.DEFAULT_TF_RECORD_FILE_NAME}-{bucket:05d}-of-{self._buckets:05d}.gz"
        with tf.io.TFRecordWriter(os.path.join(self._split_uris[split], name),
                                  tf.io.TFRecordOptions(compression_type="GZIP")) as w:
            for n in order:
                w.write(records[n])


def _input_files(exec_properties: Dict[str, Any]) -> Tuple[str, List[str]]:
    input_config = example_gen_pb2.Input()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
    if len(input_config.splits) != 1:
        raise SplitError("TimeSplitExampleGen reads one input pattern and splits it by day")
    where = os.path.join(exec_properties[standard_component_specs.INPUT_BASE_KEY], input_config.splits[0].pattern)
    files = sorted(fileio.glob(where))
    if not files:
        raise SplitError(f"{where}: no files")
    return where, files


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(self, input_dict: Dict[str, List[artifact.Artifact]], output_dict: Dict[str, List[artifact.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        where, files = _input_files(exec_properties)
        schema_file = exec_properties[standard_component_specs.SCHEMA_FILE_KEY]
        rule = TimeSplit.from_dict(json.loads(exec_properties.get(TIME_SPLIT_KEY) or "{}"))
        bounds = rule.boundaries((day_of_path(f) for f in files), where)
        size = sum(fileio.stat(f).length for f in files)
        buckets = max(1, math.ceil(size / BUCKET_BYTES))

        examples = artifact_utils.get_single_instance(output_dict[standard_component_specs.EXAMPLES_KEY])
        examples.split_names = artifact_utils.encode_split_names(list(SPLITS))
        split_uris = {s: artifact_utils.get_split_uri([examples], s) for s in SPLITS}
        for uri in split_uris.values():
            fileio.makedirs(uri)
        tmp = os.path.join(tfx_internals.tmp_dir(self), "example_gen_buckets")
        if fileio.exists(tmp):
            fileio.rmtree(tmp)
        try:
            with tfx_internals.beam_pipeline(self) as p:
                _ = (p | "Files" >> beam.Create(files)
                     | "ToBuckets" >> beam.ParDo(_ToBuckets(schema_file, rule, bounds, buckets, tmp)))
            with tfx_internals.beam_pipeline(self) as p:
                _ = (p | "Buckets" >> beam.Create([(s, b) for s in SPLITS for b in range(buckets)])
                     | "ShuffleBucket" >> beam.ParDo(_ShuffleBucket(tmp, buckets, split_uris)))
        finally:
            if fileio.exists(tmp):
                fileio.rmtree(tmp)
        examples_utils.set_payload_format(examples, exec_properties.get(
            standard_component_specs.OUTPUT_DATA_FORMAT_KEY, example_gen_pb2.FORMAT_TF_EXAMPLE))
        examples_utils.set_file_format(examples, write_split.to_file_format_str(exec_properties.get(
            standard_component_specs.OUTPUT_FILE_FORMAT_KEY, example_gen_pb2.FORMAT_TFRECORDS_GZIP)))
