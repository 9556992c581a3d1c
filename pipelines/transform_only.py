"""The pipeline's head alone: CsvExampleGen -> ImportSchemaGen -> Transform, run with LocalDagRunner.

The same split, schema and preprocessing_fn as pipelines/keep_samd.py. Used where
only transformed examples are needed: the Transform benchmark and the tests of the
trainers that read transformed examples.

    result = run_transform(data_root, workdir)
    result.transformed_examples, result.transform_graph, result.raw_examples, result.transform_seconds
"""

import dataclasses
import glob
import os
from typing import Sequence

from pipelines.options import DEFAULT_BEAM_ARGS, SCHEMA_FILE


@dataclasses.dataclass(frozen=True)
class TransformResult:
    raw_examples: str  # ExampleGen's Examples artifact (Split-train, Split-eval)
    transformed_examples: str
    transform_graph: str
    transform_seconds: float  # the Transform component alone, from ML Metadata's timestamps


def run_transform(data_root: str, workdir: str, beam_args: Sequence[str] = DEFAULT_BEAM_ARGS) -> TransformResult:
    from ml_metadata.metadata_store import metadata_store
    from tfx import v1 as tfx
    from tfx.proto import example_gen_pb2

    example_gen = tfx.components.CsvExampleGen(
        input_base=data_root,
        input_config=example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name="all", pattern="day=*/*.csv")]),
        output_config=example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
            example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=4),
            example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=1)])))
    schema = tfx.components.ImportSchemaGen(schema_file=SCHEMA_FILE)
    transform = tfx.components.Transform(examples=example_gen.outputs["examples"], schema=schema.outputs["schema"],
                                         preprocessing_fn="models.preprocessing.preprocessing_fn")
    connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(os.path.join(workdir, "metadata.sqlite"))
    root = os.path.join(workdir, "root")
    tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
        pipeline_name="transform_only", pipeline_root=root, components=[example_gen, schema, transform],
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

    return TransformResult(raw_examples=latest("CsvExampleGen", "examples"),
                           transformed_examples=latest("Transform", "transformed_examples"),
                           transform_graph=latest("Transform", "transform_graph"), transform_seconds=seconds)
