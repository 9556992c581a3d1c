"""Benchmark: Predict through serving.model_server (gRPC and REST) vs. the same SavedModel in-process.

p50/p99 latency and requests/s at batch 1, 16, 64, 256, like for like: every mode is
run with 1 client (latency) and with --clients concurrent clients (throughput), the
in-process signature included; the in-process run gets the server's default TensorFlow
thread settings (serving/runtime.py), so only the serving path differs. Modes:
in_process (no server), grpc, rest (JSON over one keep-alive connection per client),
grpc_batching (server-side batching). The server runs as a subprocess, as in
production, so its Python threads do not share a GIL with the clients. Every mode runs
--rounds times (default 3), interleaved, against servers that stay up; each figure is
the median over the rounds, and each comparison with in-process is the median of the
per-round ratios (or differences), so a drift in the machine's speed does not land on
one side. The serving targets (P50_TARGET_MS and THROUGHPUT_TARGET below: batch-1 p50
over in-process, batch-64 examples/s against in-process) are checked per mode and
printed. Each mode also records CPU per request, of the client side (this process or
h2load) and of the server process, and the server's CPU beyond the model's own
(in-process) CPU: with clients and server on the same cores, throughput is bounded by
their sum. Then the server's peak RSS under one 50 MB Predict, with the example cap
off (what the server did before it had one) and on (the default).

The grpc and rest modes time a Python client (grpcio, http.client), whose own cost
(protobuf and gRPC Python on the client side) is in their figures. When nghttp2's
h2load is installed (Debian's nghttp2-client), grpc_h2load and rest_h2load send the
same pre-serialised requests from h2load (C, one connection per client, one request in
flight each), as a C++ or Go client would; their latencies come from h2load's
per-request log, and each request body is first checked through the Python client.
`--h2load no` skips them.
Writes bench/results/serving.json.

    .venv/bin/python -m bench.serving runs/serving/keep_general \\
        'runs/pipelines/keep_samd/CsvExampleGen/examples/*/Split-test/*.gz' [--seconds 2]
"""

import argparse
import base64
import glob
import http.client
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from bench import record  # noqa: E402
from serving.runtime import configure_tensorflow  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = "bench"
REST_PATH = f"/v1/models/{MODEL}:predict"


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


def summarize(mode, batch, clients, latencies, wall, cpu=None) -> dict:
    lat = np.asarray(latencies) * 1000
    return {"mode": mode, "batch": batch, "clients": clients, "requests": len(lat),
            "p50_ms": round(float(np.percentile(lat, 50)), 3), "p99_ms": round(float(np.percentile(lat, 99)), 3),
            "requests_per_s": round(len(lat) / wall, 1), "examples_per_s": round(len(lat) * batch / wall, 1),
            **(cpu.per_request(len(lat)) if cpu else {})}


def _proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


class CpuMeter:
    """CPU seconds spent while a mode runs, per request: the client side (this process: the
    in-process model or the Python client; plus h2load, a child that has exited) and the
    server process. On a machine the client shares with the server, the client's CPU is
    taken from the server; these say how much."""

    def __init__(self, server_pid=None):
        self.server_pid = server_pid

    def _now(self):
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (time.process_time() + children.ru_utime + children.ru_stime,
                _proc_cpu_s(self.server_pid) if self.server_pid else 0.0)

    def __enter__(self):
        self._start = self._now()
        return self

    def __exit__(self, *exc):
        self._end = self._now()

    def per_request(self, n: int) -> dict:
        client, server = (1000 * (b - a) / max(n, 1) for a, b in zip(self._start, self._end))
        return {"client_cpu_ms": round(client, 3), **({"server_cpu_ms": round(server, 3)} if self.server_pid else {})}


def run_in_process(path, batches, seconds, clients=1) -> list:
    fn = tf.saved_model.load(path).signatures["serving_default"]
    results = []
    for b, serialized in batches.items():
        fn(examples=tf.constant(serialized))  # warm up, as the server does at load

        def call():
            # Converting in and out is part of the cost, as it is in the server.
            _ = {k: v.numpy() for k, v in fn(examples=tf.constant(serialized)).items()}

        with CpuMeter() as cpu:
            lat, wall = _drive(call, seconds, clients)
        results.append(summarize("in_process", b, clients, lat, wall, cpu))
    return results


def _drive(call, seconds, clients, setup=None):
    """Runs `call` from `clients` threads for `seconds`; (latencies, wall seconds)."""
    lat, lock, start = [], threading.Lock(), time.perf_counter()

    def client():
        state = setup() if setup else None
        mine = []
        while time.perf_counter() - start < seconds:
            t = time.perf_counter()
            call(state) if setup else call()
            mine.append(time.perf_counter() - t)
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, time.perf_counter() - start


def start_server(base, batching: bool, max_batch: int, timeout_us: int, extra=()):
    cmd = [sys.executable, "-m", "serving.model_server", f"--model_name={MODEL}", f"--model_base_path={base}",
           "--port=0", "--rest_api_port=-1", "--file_system_poll_wait_seconds=0", "--log_level=WARNING",
           "--version_settle_seconds=0", *extra]
    if batching:
        cmd += ["--enable_batching", f"--max_batch_size={max_batch}", f"--batch_timeout_micros={timeout_us}"]
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("ready "):
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    ports = dict(kv.split("=") for kv in line.split()[1:])
    return proc, int(ports["grpc_port"]), int(ports["rest_port"])


def _predict_request(serialized) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto(serialized, dtype=tf.string, shape=[len(serialized)]))
    return request


def _grpc_stub(port):
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", -1)])
    return channel, prediction_service_pb2_grpc.PredictionServiceStub(channel)


def run_grpc(port, mode, batches, seconds, clients, server_pid=None) -> list:
    channel, stub = _grpc_stub(port)
    results = []
    for b, serialized in batches.items():
        request = _predict_request(serialized)
        stub.Predict(request, timeout=60)  # warm the connection and the model
        with CpuMeter(server_pid) as cpu:
            lat, wall = _drive(lambda: stub.Predict(request, timeout=60), seconds, clients)
        results.append(summarize(mode, b, clients, lat, wall, cpu))
    channel.close()
    return results


def _rest_body(serialized) -> bytes:
    return json.dumps({"instances": [{"b64": base64.b64encode(x).decode()} for x in serialized]}).encode()


def _rest_predict(conn, body: bytes) -> bytes:
    conn.request("POST", REST_PATH, body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise SystemExit(f"REST predict failed: {resp.status} {data[:200]!r}")
    return data


def run_rest(port, batches, seconds, clients, server_pid=None) -> list:
    """One keep-alive connection per client, as a pooled HTTP client would hold."""
    results = []

    def connect():
        return http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    for b, serialized in batches.items():
        body = _rest_body(serialized)
        warm = connect()
        _rest_predict(warm, body)
        warm.close()
        with CpuMeter(server_pid) as cpu:
            lat, wall = _drive(lambda conn: _rest_predict(conn, body), seconds, clients, setup=connect)
        results.append(summarize("rest", b, clients, lat, wall, cpu))
    return results


PREDICT_PATH = "/tensorflow.serving.PredictionService/Predict"


def run_h2load(mode, port, body: bytes, headers, url_path, batch, seconds, clients, h1=False,
               server_pid=None) -> dict:
    """One h2load run; p50/p99 from its per-request log (elapsed microseconds, third column).

    No warm-up phase: its requests would be in the CPU figures but not in the log (the
    connection set-up it would hide is one handshake per client)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        data, log = os.path.join(tmp, "body"), os.path.join(tmp, "log")
        with open(data, "wb") as f:
            f.write(body)
        cmd = ["h2load", "-c", str(clients), "-t", "1", "-m", "1", "-D", f"{int(seconds * 1000)}ms", "-d", data,
               "--log-file", log] + [a for h in headers for a in ("-H", h)]
        cmd += (["--h1"] if h1 else []) + [f"http://127.0.0.1:{port}{url_path}"]
        with CpuMeter(server_pid) as cpu:
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows = [line.split("\t") for line in open(log) if line.strip()]
    failed = [r for r in rows if not r[1].startswith("2")]
    if failed or " 0 failed" not in out:
        raise SystemExit(f"{mode}: h2load saw failures (status {failed[:1]}):\n{out[-800:]}")
    lat = [int(r[2]) / 1e6 for r in rows]
    return summarize(mode, batch, clients, lat, float(seconds), cpu)


def grpc_frame(request: predict_pb2.PredictRequest) -> bytes:
    """A gRPC length-prefixed message: no compression flag, 4-byte big-endian length, the bytes."""
    payload = request.SerializeToString()
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def run_grpc_h2load(port, batches, seconds, clients, server_pid=None) -> list:
    channel, stub = _grpc_stub(port)
    results = []
    for b, serialized in batches.items():
        request = _predict_request(serialized)
        reply = stub.Predict(request, timeout=60)  # the same request is answered, with outputs for every row
        assert all(t.tensor_shape.dim[0].size == b for t in reply.outputs.values()), reply
        results.append(run_h2load("grpc_h2load", port, grpc_frame(request),
                                  ["content-type: application/grpc", "te: trailers"], PREDICT_PATH, b, seconds,
                                  clients, server_pid=server_pid))
    channel.close()
    return results


def run_rest_h2load(port, batches, seconds, clients, server_pid=None) -> list:
    results = []
    for b, serialized in batches.items():
        body = _rest_body(serialized)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        reply = _rest_predict(conn, body)
        conn.close()
        assert len(json.loads(reply)["predictions"]) == b, reply[:200]
        results.append(run_h2load("rest_h2load", port, body, ["content-type: application/json"], REST_PATH, b, seconds,
                                  clients, h1=True, server_pid=server_pid))
    return results


def combine_rounds(rounds: list) -> list:
    """Per (mode, batch, clients): the median of each figure over the rounds, and the median
    of its per-round ratio to (or difference from) in-process in the same round: paired, so
    drift between rounds cancels."""
    def key(r):
        return r["mode"], r["batch"], r["clients"]

    base = [{(r["batch"], r["clients"]): r for r in results if r["mode"] == "in_process"} for results in rounds]
    out = []
    for k in dict.fromkeys(key(r) for r in rounds[0]):
        runs = [next(r for r in results if key(r) == k) for results in rounds]
        ref = [b[k[1:]] for b in base]
        med = {f: float(np.median([r[f] for r in runs])) for f in ("p50_ms", "p99_ms", "requests_per_s",
                                                                    "examples_per_s", "client_cpu_ms",
                                                                    "server_cpu_ms") if f in runs[0]}
        out.append({"mode": k[0], "batch": k[1], "clients": k[2], "requests": sum(r["requests"] for r in runs),
                    **{f: round(v, 3 if f.endswith("ms") else 1) for f, v in med.items()},
                    "p50_over_in_process_ms": round(float(np.median(
                        [r["p50_ms"] - b["p50_ms"] for r, b in zip(runs, ref)])), 3),
                    "throughput_vs_in_process": round(float(np.median(
                        [r["examples_per_s"] / b["examples_per_s"] for r, b in zip(runs, ref)])), 3),
                    # The server's CPU per request beyond the model's own (in-process) CPU.
                    **({"server_cpu_over_in_process_ms": round(float(np.median(
                        [r["server_cpu_ms"] - b["client_cpu_ms"] for r, b in zip(runs, ref)])), 3)}
                       if "server_cpu_ms" in runs[0] else {})})
    return out


# The serving targets, like for like: 1 client for latency, the same clients for throughput.
P50_TARGET_MS = 0.5  # batch-1 p50 over in-process
THROUGHPUT_TARGET = 0.8  # batch-64 examples/s against in-process


def target_checks(results: list) -> list:
    checks = []
    for r in results:
        if r["mode"] == "in_process" or r["mode"].endswith("batching"):
            continue
        if r["batch"] == 1 and r["clients"] == 1:
            checks.append({"target": f"batch-1 p50 <= in-process + {P50_TARGET_MS} ms", "mode": r["mode"],
                           "value": r["p50_over_in_process_ms"], "met": r["p50_over_in_process_ms"] <= P50_TARGET_MS})
        if r["batch"] == 64:
            checks.append({"target": f"batch-64 ex/s >= {THROUGHPUT_TARGET} x in-process, {r['clients']} client(s)",
                           "mode": r["mode"], "value": r["throughput_vs_in_process"],
                           "met": r["throughput_vs_in_process"] >= THROUGHPUT_TARGET})
    return checks


def _rss_mb(pid: int) -> dict:
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if line.startswith(("VmRSS", "VmHWM")))
    return {k: round(int(v.split()[0]) / 1024, 1) for k, v in fields.items()}


def run_big_request(base, pool, mb: int = 50) -> list:
    """Server peak RSS (VmHWM) around one `mb` MB Predict: example cap off, then on."""
    per = sum(len(x) for x in pool) / len(pool)
    serialized = (pool * (int(mb * 1e6 / per) // len(pool) + 1))[:int(mb * 1e6 / per)]
    request = _predict_request(serialized)
    out = []
    for label, extra in (("no example cap (before)", ["--max_examples_per_request=0", "--max_inflight_examples=0"]),
                         ("default caps (after)", [])):
        proc, port, _ = start_server(base, False, 0, 0, extra=[f"--max_request_bytes={(mb + 14) << 20}", *extra])
        try:
            channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", -1),
                                                                          ("grpc.max_receive_message_length", -1)])
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            stub.Predict(_predict_request(pool[:1]), timeout=60)
            idle = _rss_mb(proc.pid)
            t = time.perf_counter()
            try:
                stub.Predict(request, timeout=600)
                status = "OK"
            except grpc.RpcError as e:
                status = f"{e.code().name}: {e.details()[:80]}"
            seconds = time.perf_counter() - t
            after = _rss_mb(proc.pid)
            channel.close()
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        out.append({"setting": label, "request_mb": round(request.ByteSize() / 1e6, 1),
                    "examples": len(serialized), "status": status, "seconds": round(seconds, 2),
                    "rss_idle_mb": idle.get("VmRSS"), "rss_after_mb": after.get("VmRSS"),
                    "peak_rss_mb": after.get("VmHWM")})
    return out


def run_swap(path, pool, pushes: int = 2, settle_s: float = 6.0) -> dict:
    """Batch-1 latency from 1 client while new versions are pushed (copied aside, renamed in)."""
    import shutil
    import tempfile

    root = tempfile.mkdtemp(prefix="bench-swap-")
    try:
        base = os.path.join(root, MODEL)
        shutil.copytree(path, os.path.join(base, "1"))
        proc, port, _ = start_server(base, False, 0, 0, extra=["--file_system_poll_wait_seconds=0.1"])
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = _predict_request(pool[:1])
        stub.Predict(request, timeout=60)
        lat, versions, stop = [], set(), threading.Event()

        def loop():
            while not stop.is_set():
                t = time.perf_counter()
                versions.add(stub.Predict(request, timeout=60).model_spec.version.value)
                lat.append(time.perf_counter() - t)

        thread = threading.Thread(target=loop)
        thread.start()
        try:
            time.sleep(1.0)
            for v in range(2, 2 + pushes):
                staging = os.path.join(root, f"staging-{v}")
                shutil.copytree(path, staging)
                os.rename(staging, os.path.join(base, str(v)))
                time.sleep(settle_s)
        finally:
            stop.set()
            thread.join(timeout=120)
            channel.close()
            proc.terminate()
            proc.wait(timeout=60)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ms = np.asarray(lat) * 1000
    return {"pushes": pushes, "versions_seen": sorted(versions), "requests": len(ms),
            "p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "max_ms": round(float(ms.max()), 1)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base_path", help="model base path (<base>/<version>/saved_model.pb)")
    p.add_argument("examples", help="glob of gzipped TFRecords of raw tf.Examples")
    p.add_argument("--batch_sizes", default="1,16,64,256")
    p.add_argument("--seconds", type=float, default=2.0, help="per setting; keep it short on shared machines")
    p.add_argument("--rounds", type=int, default=3, help="every mode this many times, interleaved; medians")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients for the throughput runs")
    p.add_argument("--batch_timeout_micros", type=int, default=2000)
    p.add_argument("--big_request_mb", type=int, default=50, help="0: skip the peak-RSS run")
    p.add_argument("--swap", type=int, default=1, help="0: skip the latency-across-version-swaps run")
    p.add_argument("--h2load", choices=["auto", "no"], default="auto",
                   help="auto: also time the server from h2load when it is installed")
    p.add_argument("--output", default=os.path.join(REPO, "bench", "results", "serving.json"))
    a = p.parse_args(argv)

    same_tf = configure_tensorflow()  # as the server subprocess does, before any op runs
    sizes = [int(s) for s in a.batch_sizes.split(",")]
    pool = load_examples(a.examples, max(sizes))
    if len(pool) < max(sizes):
        pool = (pool * (max(sizes) // len(pool) + 1))
    batches = {b: pool[:b] for b in sizes}
    path = latest_version(a.base_path)

    counts = sorted({1, a.clients})
    h2load = a.h2load == "auto" and shutil.which("h2load") is not None
    servers = {batching: start_server(a.base_path, batching, max_batch=2 * max(sizes),
                                      timeout_us=a.batch_timeout_micros) for batching in (False, True)}
    rounds = []
    try:
        # Rounds interleave every mode, so a drift in the machine's speed reaches all of them
        # alike; each figure is the median over the rounds.
        for r in range(a.rounds):
            results = []
            for clients in counts:
                results += run_in_process(path, batches, a.seconds, clients)
            for batching, (proc, port, rest_port) in servers.items():
                for clients in counts:
                    if batching and clients == 1:
                        continue  # nothing to batch with
                    results += run_grpc(port, "grpc_batching" if batching else "grpc", batches, a.seconds, clients,
                                        proc.pid)
                    if not batching:
                        results += run_rest(rest_port, batches, a.seconds, clients, proc.pid)
                    if h2load and not batching:
                        results += run_grpc_h2load(port, batches, a.seconds, clients, proc.pid)
                        results += run_rest_h2load(rest_port, batches, a.seconds, clients, proc.pid)
            print(f"serving: round {r + 1} of {a.rounds} done", flush=True)
            rounds.append(results)
    finally:
        for proc, _, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=60)
    results = combine_rounds(rounds)
    for r in results:
        print(f"serving: {r['mode']:<14} batch {r['batch']:>3} x{r['clients']}: p50 {r['p50_ms']:8.2f} ms  "
              f"p99 {r['p99_ms']:8.2f} ms  {r['requests_per_s']:8.1f} req/s  {r['examples_per_s']:9.0f} ex/s  "
              f"(vs in-process: p50 {r['p50_over_in_process_ms']:+.2f} ms, ex/s x{r['throughput_vs_in_process']:.2f}); "
              f"CPU/request: client {r['client_cpu_ms']:.2f} ms"
              + (f", server {r['server_cpu_ms']:.2f} ms ({r['server_cpu_over_in_process_ms']:+.2f} over in-process)"
                 if "server_cpu_ms" in r else ""))
    targets = target_checks(results)
    for t in targets:
        print(f"serving: target {t['target']}: {t['mode']} {t['value']} -> {'met' if t['met'] else 'MISSED'}")
    swap = run_swap(path, pool) if a.swap else {}
    if swap:
        print(f"serving: batch 1 x1 across {swap['pushes']} version swaps (versions {swap['versions_seen']}): "
              f"p50 {swap['p50_ms']} ms  p99 {swap['p99_ms']} ms  max {swap['max_ms']} ms")
    big = run_big_request(a.base_path, pool, a.big_request_mb) if a.big_request_mb else []
    for r in big:
        print(f"serving: {r['request_mb']} MB Predict ({r['examples']} examples), {r['setting']}: {r['status']} "
              f"in {r['seconds']} s; server RSS {r['rss_idle_mb']} MB idle -> {r['rss_after_mb']} MB after, "
              f"peak {r['peak_rss_mb']} MB")
    # Shared machines skew every figure; the load says how much else was running.
    load = [round(x, 2) for x in os.getloadavg()]
    out = {"load_average_1_5_15min_at_end": load, "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                      f"TF {tf.__version__}",
           "model": path, "in_process_has_server_tf_settings": same_tf, "h2load": h2load,
           "seconds_per_setting": a.seconds, "rounds": a.rounds,
           "results": results, "targets": targets, "per_round": rounds, "swap": swap, "big_request": big}
    record.write(a.output, out)


if __name__ == "__main__":
    main()
