"""Benchmark: gRPC Predict through serving.model_server vs. the same SavedModel in-process.

p50/p99 latency and requests/s at batch 1, 16, 64, 256, for three settings: the
signature called in this process (no server), the server without batching, and the
server with server-side batching (several concurrent clients, so batches can form).
The server runs as a subprocess, as in production, so its Python threads do not share
a GIL with the clients. Writes bench/results/serving.json.

    .venv/bin/python -m bench.serving runs/serving/keep_general \\
        'runs/pipelines/keep_samd/CsvExampleGen/examples/*/Split-test/*.gz' [--seconds 2]
"""

import argparse
import glob
import json
import os
import platform
import subprocess
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = "bench"


def load_examples(pattern: str, n: int) -> list:
    files = sorted(glob.glob(pattern))
    if not files:
        raise SystemExit(f"no files match {pattern}")
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").take(n)
    return [r.numpy() for r in ds]


def latest_version(base: str) -> str:
    versions = [d for d in os.listdir(base)
                if d.isdigit() and os.path.isfile(os.path.join(base, d, "saved_model.pb"))]
    if not versions:
        raise SystemExit(f"{base}: no <version>/saved_model.pb")
    return os.path.join(base, max(versions, key=int))


def summarize(mode, batch, clients, latencies, wall) -> dict:
    lat = np.asarray(latencies) * 1000
    return {"mode": mode, "batch": batch, "clients": clients, "requests": len(lat),
            "p50_ms": round(float(np.percentile(lat, 50)), 3), "p99_ms": round(float(np.percentile(lat, 99)), 3),
            "requests_per_s": round(len(lat) / wall, 1), "examples_per_s": round(len(lat) * batch / wall, 1)}


def run_in_process(path, batches, seconds) -> list:
    fn = tf.saved_model.load(path).signatures["serving_default"]
    results = []
    for b, serialized in batches.items():
        fn(examples=tf.constant(serialized))  # warm up, as the server does at load
        lat, start = [], time.perf_counter()
        while time.perf_counter() - start < seconds:
            t = time.perf_counter()
            # Converting in and out is part of the cost, as it is in the server.
            _ = {k: v.numpy() for k, v in fn(examples=tf.constant(serialized)).items()}
            lat.append(time.perf_counter() - t)
        results.append(summarize("in_process", b, 1, lat, time.perf_counter() - start))
    return results


def start_server(base, batching: bool, max_batch: int, timeout_us: int):
    cmd = [sys.executable, "-m", "serving.model_server", f"--model_name={MODEL}", f"--model_base_path={base}",
           "--port=0", "--rest_api_port=0", "--file_system_poll_wait_seconds=0", "--log_level=WARNING"]
    if batching:
        cmd += ["--enable_batching", f"--max_batch_size={max_batch}", f"--batch_timeout_micros={timeout_us}"]
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("ready "):
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, int(dict(kv.split("=") for kv in line.split()[1:])["grpc_port"])


def run_grpc(port, mode, batches, seconds, clients) -> list:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", -1)])
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    results = []
    for b, serialized in batches.items():
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL
        request.inputs["examples"].CopyFrom(tf.make_tensor_proto(serialized, dtype=tf.string, shape=[b]))
        stub.Predict(request, timeout=60)  # warm the connection and the model
        lat, lock, start = [], threading.Lock(), time.perf_counter()

        def client():
            mine = []
            while time.perf_counter() - start < seconds:
                t = time.perf_counter()
                stub.Predict(request, timeout=60)
                mine.append(time.perf_counter() - t)
            with lock:
                lat.extend(mine)

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        results.append(summarize(mode, b, clients, lat, time.perf_counter() - start))
    channel.close()
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base_path", help="model base path (<base>/<version>/saved_model.pb)")
    p.add_argument("examples", help="glob of gzipped TFRecords of raw tf.Examples")
    p.add_argument("--batch_sizes", default="1,16,64,256")
    p.add_argument("--seconds", type=float, default=2.0, help="per setting; keep it short on shared machines")
    p.add_argument("--clients", type=int, default=4, help="concurrent gRPC clients")
    p.add_argument("--batch_timeout_micros", type=int, default=2000)
    p.add_argument("--output", default=os.path.join(REPO, "bench", "results", "serving.json"))
    a = p.parse_args(argv)

    sizes = [int(s) for s in a.batch_sizes.split(",")]
    pool = load_examples(a.examples, max(sizes))
    if len(pool) < max(sizes):
        pool = (pool * (max(sizes) // len(pool) + 1))
    batches = {b: pool[:b] for b in sizes}
    path = latest_version(a.base_path)

    results = run_in_process(path, batches, a.seconds)
    for batching in (False, True):
        proc, port = start_server(a.base_path, batching, max_batch=2 * max(sizes),
                                  timeout_us=a.batch_timeout_micros)
        try:
            results += run_grpc(port, "grpc_batching" if batching else "grpc", batches, a.seconds, a.clients)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    for r in results:
        print(f"serving: {r['mode']:<14} batch {r['batch']:>3} x{r['clients']}: p50 {r['p50_ms']:8.2f} ms  "
              f"p99 {r['p99_ms']:8.2f} ms  {r['requests_per_s']:8.1f} req/s  {r['examples_per_s']:9.0f} ex/s")
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                      f"TF {tf.__version__}",
           "model": path, "seconds_per_setting": a.seconds, "results": results}
    os.makedirs(os.path.dirname(a.output), exist_ok=True)
    with open(a.output, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
