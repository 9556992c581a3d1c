"""Benchmark: rows/s of the Transform step (tf.Transform on Beam) as the data grows.

For each size: generate a data set, run CsvExampleGen -> ImportSchemaGen -> Transform
(the pipeline's own preprocessing_fn, the pipeline's Beam args) with LocalDagRunner,
and time the Transform component alone (from ML Metadata's execution timestamps).

    .venv/bin/python -m bench.transform [--rows 100000 1000000] [--beam-args "..."]

Writes bench/results/transform.json. On the DirectRunner expect ~17 s fixed plus
~0.5 ms per row per worker; real sizes belong on Flink, Spark or Dataflow.
"""

import argparse
import json
import os
import platform
import shlex
import shutil
import tempfile
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from synthetic import generate as G  # noqa: E402


def transform_seconds(data: str, root: str, beam_args) -> float:
    from ml_metadata.metadata_store import metadata_store
    from tfx import v1 as tfx
    from tfx.proto import example_gen_pb2

    from pipelines.options import SCHEMA_FILE

    example_gen = tfx.components.CsvExampleGen(
        input_base=data,
        input_config=example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name="all", pattern="day=*/*.csv")]),
        output_config=example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
            example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=4),
            example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=1)])))
    schema = tfx.components.ImportSchemaGen(schema_file=SCHEMA_FILE)
    transform = tfx.components.Transform(examples=example_gen.outputs["examples"], schema=schema.outputs["schema"],
                                         preprocessing_fn="models.preprocessing.preprocessing_fn")
    metadata = os.path.join(root, "metadata.sqlite")
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="bench_transform", pipeline_root=os.path.join(root, "root"),
        components=[example_gen, schema, transform], enable_cache=False, beam_pipeline_args=list(beam_args),
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata))
    tfx.orchestration.LocalDagRunner().run(pipeline)
    store = metadata_store.MetadataStore(tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata))
    for execution in store.get_executions():
        if store.get_execution_types_by_id([execution.type_id])[0].name.endswith("Transform"):
            return (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000.0
    raise RuntimeError("no Transform execution recorded")


def main(argv=None):
    from pipelines.options import DEFAULT_BEAM_ARGS

    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--beam-args", default=" ".join(DEFAULT_BEAM_ARGS))
    a = p.parse_args(argv)
    results = []
    for rows in a.rows:
        tmp = tempfile.mkdtemp()
        try:
            G.generate(os.path.join(tmp, "data"), G.GeneratorConfig(rows=rows), progress=False)
            t0 = time.perf_counter()
            seconds = transform_seconds(os.path.join(tmp, "data"), tmp, shlex.split(a.beam_args))
            total = time.perf_counter() - t0
        finally:
            shutil.rmtree(tmp)
        results.append({"rows": rows, "transform_seconds": round(seconds, 1), "rows_per_second": round(rows / seconds),
                        "pipeline_seconds": round(total, 1)})
        print(f"transform: {rows:,} rows in {seconds:.1f} s = {rows / seconds:,.0f} rows/s "
              f"(ExampleGen + Transform pipeline {total:.1f} s)", flush=True)
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
           "beam_args": a.beam_args, "results": results}
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    with open(os.path.join(os.path.dirname(__file__), "results", "transform.json"), "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
