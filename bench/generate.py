"""Benchmark: synthetic data generator throughput (rows/s), written to bench/results/generate.json.

    .venv/bin/python -m bench.generate [--rows 2000000] [--output FILE]
"""

import argparse
import os
import platform
import shutil
import tempfile
import time

from bench import record
from synthetic import generate as G


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, nargs="+", default=[200_000, 2_000_000])
    p.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results", "generate.json"))
    a = p.parse_args(argv)
    results = []
    for rows in a.rows:
        tmp = tempfile.mkdtemp()
        try:
            t0 = time.perf_counter()
            truth = G.generate(os.path.join(tmp, "d"), G.GeneratorConfig(rows=rows), progress=False)
            wall = time.perf_counter() - t0
        finally:
            shutil.rmtree(tmp)
        results.append({"rows": rows, "seconds": round(wall, 2), "rows_per_second": round(rows / wall),
                        "users": truth["config"]["users"], "items": truth["config"]["items"]})
        print(f"generate: {rows:,} rows in {wall:.1f}s = {rows / wall:,.0f} rows/s")
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
           "results": results}
    record.write(a.output, out)


if __name__ == "__main__":
    main()
