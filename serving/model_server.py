"""An embedded model server speaking TensorFlow Serving's gRPC and REST protocols.

Stands in for `tensorflow_model_server` where that binary cannot be installed: same
flags, same protos (the official `tensorflow_serving.apis` stubs), same REST paths,
same status codes, same on-disk layout (`<base_path>/<integer version>/saved_model.pb`)
and warmup file. It only reads SavedModels from disk; nothing of the training code.

    python -m serving.model_server --model_config_file=runs/serving/models.config
    python -m serving.model_server --model_name=keep_general --model_base_path=runs/serving/keep_general
    python -m serving.model_server ... --port=0 --rest_api_port=-1 --port_file=/tmp/ports.json

In-process (tests, notebooks):

    with ModelServer(model_name="m", model_base_path=path, port=0, rest_api_port=0) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
"""

import argparse
import gc
import json
import logging
import os
import signal
import sys
import threading
import time
from concurrent import futures
from typing import Callable, Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if __name__ == "__main__":
    from serving.runtime import prefer_queue_polling

    prefer_queue_polling()  # read when grpc loads: before the import below

import grpc  # noqa: E402
from tensorflow_serving.config import model_server_config_pb2  # noqa: E402

from serving import grpc_service  # noqa: E402
from serving.config import build_config, parse_config, read_config_file  # noqa: E402
from serving.errors import ServingError  # noqa: E402
from serving.limits import (DEFAULT_MAX_EXAMPLES_PER_REQUEST, DEFAULT_MAX_INFLIGHT_EXAMPLES,  # noqa: E402
                            ExampleBudget)
from serving.metrics import read_monitoring_config  # noqa: E402
from serving.rest import RestServer  # noqa: E402
from serving.runtime import configure_tensorflow  # noqa: E402
from serving.servable import BatchingOptions  # noqa: E402
from serving.versions import ModelRegistry, not_available  # noqa: E402

log = logging.getLogger("serving")

DEFAULT_MAX_REQUEST_BYTES = 64 << 20
# A version folder must be unchanged this long before it loads (see serving/versions.py).
DEFAULT_SETTLE_S = 2.0
_FROZEN = False


def parse_channel_arguments(text: str):
    """--grpc_channel_arguments "k=v,k=v" as server.cc parses it: an int32 value as an int, else a string."""
    out = []
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--grpc_channel_arguments: {item!r} is not key=value")
        try:
            number = int(value)
            out.append((key, number if -2 ** 31 <= number < 2 ** 31 else value))
        except ValueError:
            out.append((key, value))
    return out


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ModelServer:
    """gRPC + REST model server; `start()` returns once the initial versions are loaded.

    Port 0 binds any free port (read `port` / `rest_port` after start); `rest_api_port=None`
    turns REST off (the CLI's `--rest_api_port=0`, as in tensorflow_model_server; the CLI's
    `--rest_api_port=-1` is port 0 here). A version folder loads once it has been unchanged
    for `version_settle_seconds` and is complete (serving/versions.py); `clock` is the wall
    clock that rule reads (tests shift it instead of sleeping).
    """

    def __init__(self, config: Optional[model_server_config_pb2.ModelServerConfig] = None, *,
                 model_name: Optional[str] = None, model_base_path: Optional[str] = None,
                 host: str = "127.0.0.1", port: int = 8500, rest_api_port: Optional[int] = 8501,
                 enable_batching: bool = False, max_batch_size: int = 64,
                 batch_timeout_micros: int = 1000, num_batch_threads: Optional[int] = None,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 file_system_poll_wait_seconds: float = 1.0, grpc_max_threads: int = 16,
                 version_settle_seconds: float = DEFAULT_SETTLE_S, clock: Callable[[], float] = time.time,
                 rest_workers: Optional[int] = None, rest_read_timeout_seconds: float = 30.0,
                 rest_idle_timeout_seconds: float = 60.0,
                 max_examples_per_request: int = DEFAULT_MAX_EXAMPLES_PER_REQUEST,
                 max_inflight_examples: int = DEFAULT_MAX_INFLIGHT_EXAMPLES,
                 enable_reload_config_request: bool = True, model_base_path_prefix: str = "",
                 model_config_file: str = "", model_config_file_poll_wait_seconds: float = 0.0,
                 prometheus_path: Optional[str] = None, grpc_socket_path: str = "",
                 grpc_channel_arguments: str = "", prefer_tflite_model: bool = False):
        if config is None:
            if not model_base_path:
                raise ValueError("give a ModelServerConfig or model_base_path")
            config = build_config({model_name or "default": model_base_path})
        self._specs = parse_config(config)
        self._host = host
        self._port_wanted = port
        self._rest_port_wanted = rest_api_port
        self._batching = BatchingOptions(max_batch_size, batch_timeout_micros / 1e6,
                                         num_batch_threads or os.cpu_count() or 1) if enable_batching else None
        self._max_request_bytes = max_request_bytes
        self._poll_s = file_system_poll_wait_seconds
        self._grpc_threads = grpc_max_threads
        self._settle_s = version_settle_seconds
        self._clock = clock
        self._rest_options = dict(workers=rest_workers, read_timeout_s=rest_read_timeout_seconds,
                                  idle_timeout_s=rest_idle_timeout_seconds, metrics_path=prometheus_path)
        self._budget = ExampleBudget(max_examples_per_request, max_inflight_examples)
        self._allow_reload = enable_reload_config_request
        self._base_path_prefix = model_base_path_prefix
        self._grpc_socket_path = grpc_socket_path
        self._prefer_tflite = prefer_tflite_model
        self._grpc_arguments = parse_channel_arguments(grpc_channel_arguments)
        self._config_file = model_config_file
        self._config_poll_s = model_config_file_poll_wait_seconds
        self._config_text: Optional[str] = None  # the file's last applied content
        self._config_stop = threading.Event()
        self._config_poller: Optional[threading.Thread] = None
        self.registry: Optional[ModelRegistry] = None
        self._grpc: Optional[grpc.Server] = None
        self._rest: Optional[RestServer] = None
        self._rest_thread: Optional[threading.Thread] = None
        self.port: Optional[int] = None
        self.rest_port: Optional[int] = None

    @property
    def stats(self) -> dict:
        return self.registry.stats.snapshot() if self.registry else {}

    def start(self) -> "ModelServer":
        # TensorFlow's modules are ~1M long-lived objects; every full collection walked them
        # with the GIL held: the stalls seen at version swaps.
        # Frozen, they are never scanned again; models stay collectable.
        global _FROZEN
        if not _FROZEN:  # once: later freezes would pin earlier servers' models (tests)
            gc.collect()
            gc.freeze()
            _FROZEN = True
        # Like tensorflow_model_server: load what can be loaded before accepting requests.
        self.registry = ModelRegistry(self._specs, self._batching, retry_base_s=max(self._poll_s, 0.1),
                                      settle_s=self._settle_s, clock=self._clock, budget=self._budget,
                                      allow_reload=self._allow_reload,
                                      base_path_prefix=self._base_path_prefix,
                                      prefer_tflite=self._prefer_tflite)
        self.registry.wait_settled()
        # As tensorflow_model_server: a model whose versions fail to load fails start-up. One with no
        # version on disk yet starts empty (TF Serving would wait for it forever).
        failed = self.registry.unavailable(self._specs, failed_only=True)
        if failed:
            self.registry.close()
            raise not_available(failed)
        try:
            self._start_grpc()
            if self._rest_port_wanted is not None:
                self._rest = RestServer((self._host, self._rest_port_wanted), self.registry,
                                        self._max_request_bytes, **self._rest_options)
                self.rest_port = self._rest.port
                self._rest_thread = threading.Thread(target=self._rest.serve_forever,
                                                     kwargs={"poll_interval": 0.2},
                                                     name="rest-server", daemon=True)
                self._rest_thread.start()
        except BaseException:
            self.stop()
            raise
        # 0 polls exactly once (done above), as in tensorflow_model_server.
        self.registry.start_polling(self._poll_s)
        if self._config_file and self._config_poll_s > 0:
            try:
                with open(self._config_file) as f:
                    self._config_text = f.read()  # what the server started from (the CLI read it)
            except OSError:
                pass
            self._config_poller = threading.Thread(target=self._poll_config_file, name="config-poller", daemon=True)
            self._config_poller.start()
        log.info("serving models %s: gRPC on %s%s", sorted(self._specs), _host_port(self._host, self.port),
                 f", REST on {_host_port(self._host, self.rest_port)}" if self.rest_port else "")
        return self

    def _start_grpc(self):
        options = [("grpc.max_receive_message_length", self._max_request_bytes),
                   ("grpc.max_send_message_length", -1),
                   ("grpc.so_reuseport", 0)]  # a busy port must fail, not be shared
        options += self._grpc_arguments  # after ours, as server.cc adds them: gRPC takes the last
        # RPCs past this many (running or queued for a thread) get RESOURCE_EXHAUSTED from gRPC
        # itself: queued requests hold their bytes (up to --max_request_bytes each) meanwhile.
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=self._grpc_threads,
                                                            thread_name_prefix="grpc"), options=options,
                                 maximum_concurrent_rpcs=8 * self._grpc_threads)
        grpc_service.add_services(self._grpc, self.registry)
        address = _host_port(self._host, self._port_wanted)
        try:
            bound = self._grpc.add_insecure_port(address)
        except RuntimeError as e:
            raise OSError(f"cannot bind gRPC port {address}: {e}") from e
        if not bound:
            raise OSError(f"cannot bind gRPC port {address}")
        if self._grpc_socket_path:  # server.cc: also "unix:<path>"
            try:
                if not self._grpc.add_insecure_port(f"unix:{self._grpc_socket_path}"):
                    raise RuntimeError("not bound")
            except RuntimeError as e:
                raise OSError(f"cannot bind gRPC socket {self._grpc_socket_path}: {e}") from e
        self.port = bound
        self._grpc.start()

    def poll_now(self) -> None:
        """One scan of every base path, now (tests; the poller does this every interval)."""
        self.registry.sync()

    def reload_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        self.registry.reload(parse_config(config))

    def poll_config_file(self) -> None:
        """Re-reads --model_config_file and applies it when it changed, as server.cc's
        PollFilesystemAndReloadConfig: a file that does not parse or load is logged and the
        models already served stay."""
        try:
            with open(self._config_file) as f:
                text = f.read()
            if text == self._config_text:
                return
            config = read_config_file(self._config_file)
        except (OSError, ServingError) as e:
            log.error("Failed to read ModelServerConfig file: %s", e)
            return
        self._config_text = text
        try:
            specs = parse_config(config)
            self.registry.reload(specs)
        except ServingError as e:
            log.error("PollFilesystemAndReloadConfig failed to ReloadConfig: %s", e.message)
            return
        failed = self.registry.unavailable(specs)
        if failed:
            log.error("PollFilesystemAndReloadConfig failed to ReloadConfig: %s", not_available(failed).message)
        log.info("reloaded model config from %s: %s", self._config_file, sorted(specs))

    def _poll_config_file(self):
        while not self._config_stop.wait(self._config_poll_s):
            try:
                self.poll_config_file()
            except Exception:  # noqa: BLE001 - the poller must outlive one bad read
                log.exception("model config poll failed")

    def stop(self, grace_s: float = 1.0) -> None:
        self._config_stop.set()
        if self._config_poller is not None:
            self._config_poller.join(timeout=30)
            self._config_poller = None
        if self._rest is not None:
            self._rest.shutdown()
            self._rest.server_close()
            self._rest = None
        if self._grpc is not None:
            self._grpc.stop(grace_s).wait()
            self._grpc = None
        if self.registry is not None:
            self.registry.close()

    def wait(self) -> None:
        if self._grpc is not None:
            self._grpc.wait_for_termination()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _bool(value: str) -> bool:
    v = str(value).lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {value!r}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--port", type=int, default=8500, help="gRPC port (0: any free port)")
    p.add_argument("--rest_api_port", type=int, default=8501,
                   help="REST port (0: no REST, as in tensorflow_model_server; -1: any free port)")
    p.add_argument("--port_file", default="",
                   help="once both ports are bound and the initial versions loaded, write "
                        "{\"grpc_port\": N, \"rest_port\": M} here as JSON (atomically)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind both ports to")
    p.add_argument("--model_config_file", default="", help="ModelServerConfig text proto")
    p.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0,
                   help="seconds between re-reads of --model_config_file, applied when it changed (0: read once)")
    p.add_argument("--model_name", default="default", help="model name, without --model_config_file")
    p.add_argument("--model_base_path", default="", help="model base path, without --model_config_file")
    p.add_argument("--enable_batching", type=_bool, nargs="?", const=True, default=False)
    p.add_argument("--max_batch_size", type=int, default=64)
    p.add_argument("--batch_timeout_micros", type=int, default=1000)
    p.add_argument("--num_batch_threads", type=int, default=0, help="0: one per CPU")
    p.add_argument("--max_request_bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES)
    p.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                   help="seconds between scans of the base paths (0: scan once at startup)")
    p.add_argument("--grpc_max_threads", type=int, default=16)
    p.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0,
                   help="threads one op may use (0: TensorFlow's choice)")
    p.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0,
                   help="ops run at once (0: TensorFlow's choice)")
    p.add_argument("--tensorflow_thread_spinning", type=_bool, nargs="?", const=True, default=False,
                   help="let TF's idle pool threads spin for work (see serving/runtime.py)")
    p.add_argument("--rest_api_num_threads", type=int, default=0,
                   help="REST worker threads (0: 2 per CPU, at least 4); beyond them clients wait")
    # Not TF Serving's --rest_api_timeout_in_ms (a processing timeout): a receive deadline.
    p.add_argument("--rest_read_timeout_in_ms", type=int, default=30000,
                   help="a REST request must arrive whole within this (else 408, connection closed)")
    p.add_argument("--max_examples_per_request", type=int, default=DEFAULT_MAX_EXAMPLES_PER_REQUEST,
                   help="rows per Predict (0: no cap); beyond: RESOURCE_EXHAUSTED / 429")
    p.add_argument("--max_inflight_examples", type=int, default=DEFAULT_MAX_INFLIGHT_EXAMPLES,
                   help="rows in flight over all requests (0: no budget); beyond: RESOURCE_EXHAUSTED / 429")
    p.add_argument("--enable_reload_config_request", type=_bool, nargs="?", const=True, default=True,
                   help="false: HandleReloadConfigRequest answers PERMISSION_DENIED")
    p.add_argument("--model_base_path_prefix", default="",
                   help="reload requests may only name base paths under this folder")
    p.add_argument("--version_settle_seconds", type=float, default=DEFAULT_SETTLE_S,
                   help="a version folder loads only after nothing in it changed for this long")
    p.add_argument("--grpc_socket_path", default="",
                   help="also serve gRPC on this UNIX socket (clients dial unix:<path>)")
    p.add_argument("--grpc_channel_arguments", default="",
                   help="gRPC server arguments, k=v,k=v (e.g. grpc.max_connection_age_ms=2000)")
    p.add_argument("--rest_api_timeout_in_ms", type=int, default=30000,
                   help="accepted for TF Serving's command lines; a REST request's receive deadline is "
                        "--rest_read_timeout_in_ms, and a running model call is not interrupted")
    p.add_argument("--prefer_tflite_model", type=_bool, nargs="?", const=True, default=False,
                   help="serve a version's model.tflite (tf.lite.Interpreter) where it has one")
    p.add_argument("--monitoring_config_file", default="",
                   help="MonitoringConfig text proto; prometheus_config { enable: true } serves TF Serving's "
                        "metrics on the REST port at its path (default /monitoring/prometheus/metrics)")
    p.add_argument("--log_level", default="INFO")
    a = p.parse_args(argv)
    if not a.model_config_file and not a.model_base_path:
        p.error("give --model_config_file or --model_base_path")
    if a.tensorflow_intra_op_parallelism < 0 or a.tensorflow_inter_op_parallelism < 0:
        p.error("--tensorflow_*_op_parallelism must be >= 0")
    if a.rest_api_port < -1:
        p.error("--rest_api_port must be -1 (any free port), 0 (no REST) or a port")
    return a


def _rest_port_arg(value: int) -> Optional[int]:
    # CLI 0 is TF Serving's "REST off"; -1 is ours for "any free port" (ModelServer's 0).
    return None if value == 0 else (0 if value == -1 else value)


def write_port_file(path: str, grpc_port: int, rest_port: int) -> None:
    """Readers poll for the file: it must never be seen half-written."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump({"grpc_port": grpc_port, "rest_port": rest_port}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def shutdown_event() -> threading.Event:
    """An event SIGINT and SIGTERM set (install from the main thread)."""
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    return done


def wait_for(done: threading.Event, poll_s: float = 0.5) -> None:
    """Blocks the main thread until `done` is set by a signal handler.

    A plain `done.wait()` can sleep forever: the kernel may deliver the signal to any of
    gRPC's or TensorFlow's threads, and then nothing interrupts the main thread's untimed
    lock wait, so Python never runs the handler. A timed wait returns to the interpreter,
    which runs pending handlers.
    """
    while not done.wait(poll_s):
        pass


def main(argv=None) -> int:
    a = parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure_tensorflow(a.tensorflow_intra_op_parallelism, a.tensorflow_inter_op_parallelism,
                         a.tensorflow_thread_spinning)
    try:
        config = read_config_file(a.model_config_file) if a.model_config_file else None
        prometheus = read_monitoring_config(a.monitoring_config_file) if a.monitoring_config_file else None
        server = _server_from_args(a, config, prometheus)
        server.start()
    except (ServingError, OSError, ValueError) as e:
        print(f"model_server: {e}", file=sys.stderr)
        return 2
    done = shutdown_event()
    if a.port_file:
        try:
            write_port_file(a.port_file, server.port, server.rest_port or 0)
        except OSError as e:
            print(f"model_server: cannot write --port_file: {e}", file=sys.stderr)
            server.stop()
            return 2
    # Machine-readable, for scripts that start the server on port 0.
    print(f"ready grpc_port={server.port} rest_port={server.rest_port or 0}", flush=True)
    wait_for(done)
    log.info("shutting down")
    server.stop()
    return 0


def _server_from_args(a: argparse.Namespace, config, prometheus_path: Optional[str] = None) -> ModelServer:
    return ModelServer(config, model_name=a.model_name, model_base_path=a.model_base_path,
                       host=a.host, port=a.port, rest_api_port=_rest_port_arg(a.rest_api_port),
                       enable_batching=a.enable_batching, max_batch_size=a.max_batch_size,
                       batch_timeout_micros=a.batch_timeout_micros,
                       num_batch_threads=a.num_batch_threads or None,
                       max_request_bytes=a.max_request_bytes,
                       file_system_poll_wait_seconds=a.file_system_poll_wait_seconds,
                       grpc_max_threads=a.grpc_max_threads,
                       version_settle_seconds=a.version_settle_seconds,
                       rest_workers=a.rest_api_num_threads or None,
                       rest_read_timeout_seconds=a.rest_read_timeout_in_ms / 1000,
                       max_examples_per_request=a.max_examples_per_request,
                       max_inflight_examples=a.max_inflight_examples,
                       enable_reload_config_request=a.enable_reload_config_request,
                       model_base_path_prefix=a.model_base_path_prefix, model_config_file=a.model_config_file,
                       model_config_file_poll_wait_seconds=a.model_config_file_poll_wait_seconds,
                       prometheus_path=prometheus_path, grpc_socket_path=a.grpc_socket_path,
                       grpc_channel_arguments=a.grpc_channel_arguments, prefer_tflite_model=a.prefer_tflite_model)


if __name__ == "__main__":
    sys.exit(main())
