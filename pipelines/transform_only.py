"""The pipeline's head alone: ExampleGen (time split) -> ImportSchemaGen -> Transform, run with LocalDagRunner.

The same split, schema and preprocessing_fn as pipelines/keep_samd.py. Used where
only transformed examples are needed: the Transform benchmark and the tests of the
trainers that read transformed examples.

    result = run_transform(data_root, workdir)
    result.transformed_examples, result.transform_graph, result.raw_examples, result.transform_seconds

`write_examples` turns the raw CSVs into ExampleGen's output layout without Beam or
shuffling, and `run_transform(..., examples_uri=...)` imports that instead of running
ExampleGen: for a benchmark of Transform alone.
"""

import dataclasses
import glob
import json
import os
from typing import Callable, Optional, Sequence

from pipelines.options import DEFAULT_BEAM_ARGS, EXAMPLE_GEN_ID, RAW_PATTERN, SCHEMA_FILE, example_gen


@dataclasses.dataclass(frozen=True)
class TransformResult:
    raw_examples: str  # ExampleGen's Examples artifact (Split-train, Split-validation, Split-test)
    transformed_examples: str
    transform_graph: str
    transform_seconds: float  # the Transform component alone, from ML Metadata's timestamps


def write_examples(data_root: str, uri: str, shards: int = 4, progress: Optional[Callable[[int], None]] = None,
                   time_split: Optional[dict] = None) -> int:
    """Writes data_root's day=*/*.csv as tf.Examples under uri/Split-{train,validation,test}.

    Like the pipeline's ExampleGen: split by day with the same TimeSplit (with a hash
    validation slice the hash is of this encoder's bytes, so the same share but not
    necessarily the same rows); the same encoder (`time_split_example_gen.encode`), but
    in file order, not shuffled. Files are uncompressed TFRecords, `shards` per split, streamed block by block.
    Returns the number of rows written; `progress(rows_so_far)` is called per block.
    """
    import tensorflow as tf

    from components.time_split_example_gen import encode
    from components.time_split_example_gen.split import SPLITS, TimeSplit, day_of_path

    files = sorted(glob.glob(os.path.join(data_root, RAW_PATTERN)))
    if not files:
        raise FileNotFoundError(f"{data_root}: no {RAW_PATTERN} files")
    rule = TimeSplit.from_dict(time_split)
    bounds = rule.boundaries((day_of_path(f) for f in files), os.path.join(data_root, RAW_PATTERN))
    writers = {}
    for split in SPLITS:
        os.makedirs(os.path.join(uri, f"Split-{split}"), exist_ok=True)
        writers[split] = [tf.io.TFRecordWriter(os.path.join(uri, f"Split-{split}", f"data_tfrecord-{k:05d}-of-{shards:05d}"))
                          for k in range(shards)]
    rows = 0
    try:
        for path in files:
            for records, days in encode.encode_csv(path, SCHEMA_FILE):
                for n, record in enumerate(records):
                    split = SPLITS[rule.assign(int(days[n]), bounds, record)]
                    writers[split][(rows + n) % shards].write(record)
                rows += len(records)
                if progress:
                    progress(rows)
    finally:
        for split_writers in writers.values():
            for w in split_writers:
                w.close()
    return rows


def examples_importer(uri: str, node_id: str):
    """An Importer of an Examples artifact with the time split's splits (written earlier, e.g. by write_examples)."""
    from tfx import v1 as tfx

    from components.time_split_example_gen.split import SPLITS

    return tfx.dsl.Importer(source_uri=uri, artifact_type=tfx.types.standard_artifacts.Examples,
                            properties={"split_names": json.dumps(list(SPLITS))}).with_id(node_id)


def run_transform(data_root: str, workdir: str, beam_args: Sequence[str] = DEFAULT_BEAM_ARGS,
                  examples_uri: Optional[str] = None) -> TransformResult:
    """examples_uri: examples written by write_examples, imported instead of running CsvExampleGen."""
    from ml_metadata.metadata_store import metadata_store
    from tfx import v1 as tfx

    if examples_uri is None:
        gen = example_gen(data_root)
        examples = gen.outputs["examples"]
    else:
        gen = examples_importer(examples_uri, "ExamplesImporter")
        examples = gen.outputs["result"]
    schema = tfx.components.ImportSchemaGen(schema_file=SCHEMA_FILE)
    transform = tfx.components.Transform(examples=examples, schema=schema.outputs["schema"],
                                         preprocessing_fn="models.preprocessing.preprocessing_fn")
    connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(os.path.join(workdir, "metadata.sqlite"))
    root = os.path.join(workdir, "root")
    tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
        pipeline_name="transform_only", pipeline_root=root, components=[gen, schema, transform],
        enable_cache=False, beam_pipeline_args=list(beam_args), metadata_connection_config=connection))
    store = metadata_store.MetadataStore(connection)
    seconds = None
    for execution in store.get_executions():
        if store.get_execution_types_by_id([execution.type_id])[0].name.endswith("Transform"):
            seconds = (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000.0
    if seconds is None:
        raise RuntimeError("no Transform execution recorded")

    def latest(*parts):
        found = sorted(glob.glob(os.path.join(root, *parts, "*")), key=lambda p: int(os.path.basename(p)))
        if not found:
            raise FileNotFoundError(os.path.join(root, *parts))
        return found[-1]

    return TransformResult(raw_examples=examples_uri or latest(EXAMPLE_GEN_ID, "examples"),
                           transformed_examples=latest("Transform", "transformed_examples"),
                           transform_graph=latest("Transform", "transform_graph"), transform_seconds=seconds)
