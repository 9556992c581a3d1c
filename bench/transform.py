"""Benchmark: rows/s of the Transform step (tf.Transform on Beam) as the data grows.

For each size: generate a data set, write it as ExampleGen's output (split by day) and run
Transform on it with the pipeline's preprocessing_fn, schema and Beam args
(pipelines/transform_only.py), timing the Transform component alone from ML Metadata's
execution timestamps.

    .venv/bin/python -m bench.transform [--rows 100000 1000000 10000000] [--beam-args "..."]
                                         [--examples written|example_gen] [--output FILE]

--examples written (default) writes the examples with pipelines.transform_only.write_examples
(no Beam); example_gen runs the pipeline's ExampleGen first. Both give the same
examples split by day. The whole pipeline at scale is bench/scale.py.

Writes bench/results/transform.json (transform_example_gen.json with --examples example_gen),
or --output; sizes measured before on the same machine and Beam args are kept.
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

from bench import record  # noqa: E402
from pipelines.transform_only import run_transform, write_examples  # noqa: E402
from synthetic import generate as G  # noqa: E402


def _every_tenth(rows):
    shown = [0]

    def progress(n):
        if n * 10 // rows > shown[0]:
            shown[0] = n * 10 // rows
            print(f"  examples written: {n:,}/{rows:,}", flush=True)

    return progress


def main(argv=None):
    from pipelines.options import DEFAULT_BEAM_ARGS

    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--beam-args", default=" ".join(DEFAULT_BEAM_ARGS))
    p.add_argument("--examples", choices=["written", "example_gen"], default="written")
    p.add_argument("--output", default=None, help="default: bench/results/transform[_example_gen].json")
    a = p.parse_args(argv)
    results = []
    for rows in a.rows:
        tmp = tempfile.mkdtemp()
        try:
            data = os.path.join(tmp, "data")
            G.generate(data, G.GeneratorConfig(rows=rows), progress=False)
            t0 = time.perf_counter()
            examples = None
            if a.examples == "written":
                examples = os.path.join(tmp, "examples")
                write_examples(data, examples, progress=_every_tenth(rows))
            seconds = run_transform(data, tmp, shlex.split(a.beam_args), examples_uri=examples).transform_seconds
            total = time.perf_counter() - t0
        finally:
            shutil.rmtree(tmp)
        results.append({"rows": rows, "transform_seconds": round(seconds, 1), "rows_per_second": round(rows / seconds),
                        "pipeline_seconds": round(total, 1)})
        print(f"transform: {rows:,} rows in {seconds:.1f} s = {rows / seconds:,.0f} rows/s "
              f"(examples + Transform {total:.1f} s)", flush=True)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    name = "transform.json" if a.examples == "written" else "transform_example_gen.json"
    path = a.output or os.path.join(os.path.dirname(__file__), "results", name)
    if os.path.exists(path):  # keep other sizes measured on the same machine and Beam args
        with open(path) as f:
            before = json.load(f)
        if (before.get("machine"), before.get("beam_args")) == (machine, a.beam_args):
            sizes = {r["rows"] for r in results}
            results = sorted([r for r in before["results"] if r["rows"] not in sizes] + results, key=lambda r: r["rows"])
    record.write(path, {"machine": machine, "beam_args": a.beam_args, "examples": a.examples, "results": results})


if __name__ == "__main__":
    main()
