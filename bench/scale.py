"""Benchmark: the whole pipeline at scale (default 10M rows), wall time and peak memory per component.

Generates the data (default preset, `--rows`; reused if `--data` already holds it), runs
`pipelines/local_runner.py` as a user would (default options, the DirectRunner with the
pipeline's Beam args), samples the resident memory of the runner's whole process tree
(Beam's worker processes included) every `--interval` seconds, and reads each
component's start and end from ML Metadata. A component's peak is the largest sample
taken while it ran. The sum counts each process's shared pages (the libraries every
Beam worker maps) once per process, so it is an upper bound on the machine's use; the
runner process keeps memory its earlier components allocated, so a component's peak
includes what came before it.

    .venv/bin/python -m bench.scale [--rows 10000000] [--workdir /tmp/keep_samd_scale] [--output FILE]

Writes bench/results/scale.json or --output (one entry per row count; a new run replaces its own).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time

from bench import record

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "bench", "results", "scale.json")


class TreeMemory:
    """Samples the summed RSS of a process and its descendants in a thread: [(unix time, bytes)]."""

    def __init__(self, pid: int, interval: float):
        import psutil

        self._root = psutil.Process(pid)
        self._interval = interval
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        import psutil

        total = 0
        try:
            procs = [self._root] + self._root.children(recursive=True)
        except psutil.NoSuchProcess:
            return 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def _run(self):
        while not self._stop.is_set():
            self.samples.append((time.time(), self._rss()))
            self._stop.wait(self._interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def component_times(metadata_path: str):
    """[(node id, start, end, state)] of every execution in ML Metadata, in start order (unix seconds)."""
    from ml_metadata.proto import metadata_store_pb2

    from pipelines.console import node_executions

    found = [(node, e.create_time_since_epoch / 1000, e.last_update_time_since_epoch / 1000,
              metadata_store_pb2.Execution.State.Name(e.last_known_state))
             for node, runs in node_executions(metadata_path).items() for e in runs]
    return sorted(found, key=lambda r: r[1])


def per_component(times, samples):
    rows = []
    for node, start, end, state in times:
        inside = [b for t, b in samples if start <= t <= end]
        rows.append({"component": node, "seconds": round(end - start, 1), "state": state,
                     "peak_gb": round(max(inside) / 1e9, 2) if inside else None})
    return rows


def _save(entry, path=RESULTS):
    old = []
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)["results"]
    results = [r for r in old if r["rows"] != entry["rows"]] + [entry]
    record.write(path, {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                        "command": ".venv/bin/python -m bench.scale --rows N",
                        "results": sorted(results, key=lambda r: r["rows"])})


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--workdir", default="/tmp/keep_samd_scale")
    p.add_argument("--data", default=None, help="data root (default <workdir>/data-<rows>); generated if absent")
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--no-save", action="store_true", help="print, do not write --output")
    p.add_argument("--output", default=RESULTS)
    a = p.parse_args(argv)

    data = a.data or os.path.join(a.workdir, f"data-{a.rows}")
    generate_seconds = None
    if not os.path.exists(os.path.join(data, "scenarios.csv")):
        start = time.time()
        subprocess.run([sys.executable, "-m", "synthetic.generate", "--output", data, "--rows", str(a.rows)],
                       cwd=REPO, check=True)
        generate_seconds = round(time.time() - start, 1)
    out = os.path.join(a.workdir, f"run-{a.rows}-{time.strftime('%Y%m%d-%H%M%S')}")
    env = {**os.environ, "KEEP_SAMD_DATA": data, "KEEP_SAMD_OUTPUT": out, "TF_USE_LEGACY_KERAS": "1"}
    load = os.getloadavg()
    start = time.time()
    proc = subprocess.Popen([sys.executable, "pipelines/local_runner.py"], cwd=REPO, env=env)
    with TreeMemory(proc.pid, a.interval) as memory:
        rc = proc.wait()
    wall = time.time() - start
    from pipelines.options import PIPELINE_NAME

    metadata = os.path.join(out, "metadata", PIPELINE_NAME, "metadata.sqlite")
    times = component_times(metadata) if os.path.exists(metadata) else []
    entry = {
        "rows": a.rows, "data": data, "output": out, "exit_code": rc, "wall_seconds": round(wall, 1),
        "generate_seconds": generate_seconds,
        "peak_gb": round(max((b for _, b in memory.samples), default=0) / 1e9, 2),
        "load_average_at_start": [round(x, 2) for x in load],
        "components": per_component(times, memory.samples),
    }
    print(json.dumps(entry, indent=1))
    if not a.no_save:
        _save(entry, a.output)
    return rc


if __name__ == "__main__":
    sys.exit(main())
