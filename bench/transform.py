"""Benchmark: rows/s of the Transform step (tf.Transform on Beam) as the data grows.

For each size: generate a data set, run the pipeline's head (pipelines/transform_only.py:
CsvExampleGen -> ImportSchemaGen -> Transform, the pipeline's Beam args) and time the
Transform component alone (from ML Metadata's execution timestamps).

    .venv/bin/python -m bench.transform [--rows 100000 1000000] [--beam-args "..."]

Writes bench/results/transform.json (sizes measured before on the same machine are kept).

Measured on the 2-core, 24 GiB machine: 100k rows 47 s, 1M 151 s, 3M 309 s (peak RSS of
the runner and its workers ~12 GB at 3M). 10M rows do not fit: the DirectRunner keeps
each stage's output in the driver's memory and CsvExampleGen was OOM-killed at 22.7 GB.
Real sizes belong on Flink, Spark or Dataflow (KEEP_SAMD_BEAM_ARGS).
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

from pipelines.transform_only import run_transform  # noqa: E402
from synthetic import generate as G  # noqa: E402


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
            seconds = run_transform(os.path.join(tmp, "data"), tmp, shlex.split(a.beam_args)).transform_seconds
            total = time.perf_counter() - t0
        finally:
            shutil.rmtree(tmp)
        results.append({"rows": rows, "transform_seconds": round(seconds, 1), "rows_per_second": round(rows / seconds),
                        "pipeline_seconds": round(total, 1)})
        print(f"transform: {rows:,} rows in {seconds:.1f} s = {rows / seconds:,.0f} rows/s "
              f"(ExampleGen + Transform pipeline {total:.1f} s)", flush=True)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    path = os.path.join(os.path.dirname(__file__), "results", "transform.json")
    if os.path.exists(path):  # keep other sizes measured on the same machine and Beam args
        with open(path) as f:
            before = json.load(f)
        if before.get("machine") == machine and before.get("beam_args") == a.beam_args:
            sizes = {r["rows"] for r in results}
            results = sorted([r for r in before["results"] if r["rows"] not in sizes] + results, key=lambda r: r["rows"])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"machine": machine, "beam_args": a.beam_args, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
