"""The run console: what a keep_samd run shows on the terminal.

A run prints one line as each component starts and one as it ends (wall time and its
key figure: rows read, anomalies, validation AUC, blessed or not, version pushed), a
"still running" line during long steps, and a summary table at the end. Everything
else (TensorFlow's C++ probes, Beam's and google-api-core's warnings, absl's INFO
lines, Keras' epochs) goes to <output>/logs/<run>.log.

KEEP_SAMD_VERBOSE=1 (or `python pipelines/local_runner.py --verbose`) leaves that
output on the terminal, the console lines still among it.

The noise is redirected at the file-descriptor level: TensorFlow's C++ logging and
Beam's worker subprocesses write to fds 1 and 2 directly, past sys.stdout/sys.stderr.
"""

import contextlib
import json
import logging
import os
import re
import sys
import threading
import time
from typing import Dict, List, Optional

VERBOSE_ENV = "KEEP_SAMD_VERBOSE"
PROGRESS_ENV = "KEEP_SAMD_PROGRESS_SECONDS"

# What TFX's LocalDagRunner and its Launcher log around each node (tfx/orchestration/local/
# local_dag_runner.py, tfx/orchestration/portable/launcher.py).
_RUNNING = re.compile(r"^Component (\S+) is running\.$")
_FINISHED = re.compile(r"^Component (\S+) is finished\.$")
_EXECUTION = re.compile(r"^Going to run a new execution (\d+)$")
_CACHED = re.compile(r"^A cached execution (\d+) is used\.$")


def verbose_requested(argv=None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return "--verbose" in argv or os.environ.get(VERBOSE_ENV, "").lower() not in ("", "0", "false", "no")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _open_log(folder: str, stem: str):
    """A new log file <folder>/<stem>.log (…-2.log, … if two runs start in the same second)."""
    os.makedirs(folder, exist_ok=True)
    for n in range(1, 1000):
        path = os.path.join(folder, f"{stem}.log" if n == 1 else f"{stem}-{n}.log")
        try:
            return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: too many logs named {stem}")


class _Log:
    """Where fds 1 and 2 go (see `quiet`): `terminal`, a stream to the original stderr, for what
    the user should see; `path`, the log file, None until `open` (and always, verbose)."""

    def __init__(self, terminal, fd: Optional[int]):
        self.terminal = terminal
        self.path = None
        self._fd = fd

    def open(self, folder: str, stem: str) -> None:
        """Moves the output to <folder>/<stem>.log, what was written before it included."""
        if self._fd is None:  # verbose
            return
        path, fd = _open_log(folder, stem)
        sys.stdout.flush()
        sys.stderr.flush()
        os.lseek(self._fd, 0, os.SEEK_SET)
        while True:
            chunk = os.read(self._fd, 1 << 20)
            if not chunk:
                break
            os.write(fd, chunk)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(self._fd)
        self._fd, self.path = fd, path


@contextlib.contextmanager
def quiet(verbose: bool = False):
    """Sends fds 1 and 2, so every library's output and every child process's, to a log; yields
    a `_Log`. Until `open` says where the log goes (the options must be read first, and reading
    them imports TFX, which prints), a temporary file holds the output."""
    if verbose:
        yield _Log(sys.stderr, None)
        return
    import tempfile

    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with tempfile.TemporaryFile() as held:  # unlinked: the file lives as long as our copy of its fd
        log = _Log(os.fdopen(os.dup(saved[2]), "w", buffering=1), os.dup(held.fileno()))
    try:
        os.dup2(log._fd, 1)
        os.dup2(log._fd, 2)
        yield log
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(log._fd)
        log.terminal.close()


class _Hook(logging.Handler):
    """Feeds the runner's absl log records (start, execution id, end of each node) to the console."""

    def __init__(self, console):
        super().__init__(logging.INFO)
        self._console = console

    def emit(self, record):
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed third-party record is not ours to fail on
            return
        for pattern, event in ((_RUNNING, self._console.started), (_EXECUTION, self._console.execution),
                               (_CACHED, self._console.cached), (_FINISHED, self._console.finished)):
            m = pattern.match(message)
            if m:
                event(m.group(1))
                return


class RunConsole:
    """The console of one pipeline run; `with RunConsole(...) as console: runner.run(pipeline)`."""

    def __init__(self, out, log_path: Optional[str], run_id: str, metadata_path: str, output_dir: str,
                 components: List[str], progress_seconds: Optional[float] = None):
        """`out`: the terminal (see `quiet`); `log_path`: where the rest goes, None when verbose."""
        self._out = out
        self.log_path = log_path
        self.run_id = run_id
        self.metadata_path = metadata_path
        self.output_dir = output_dir
        self.components = list(components)
        if progress_seconds is None:
            progress_seconds = float(os.environ.get(PROGRESS_ENV) or 60)
        self.progress_seconds = progress_seconds
        self.evaluations: Dict[str, Dict] = {}  # served model name -> {"auc": x, "blessed": b, "reason": why}
        self.pushed: Dict[str, str] = {}  # served model name -> version
        self.report_dir = None
        self._current = None  # (node id, start time, execution id)
        self._cached = False  # the current node's outputs are an earlier execution's (TFX's cache)
        self._started = self._last_line = time.time()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._hook = _Hook(self)
        self._store = None

    # --- the terminal ---

    def say(self, line: str) -> None:
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()
            self._last_line = time.time()

    def _prefix(self, node: str) -> str:
        index = self.components.index(node) + 1 if node in self.components else 0
        width = len(str(len(self.components)))
        return f"[{index:>{width}}/{len(self.components)}] {node:<24}"

    def __enter__(self):
        where = f"log: {self.log_path} ({VERBOSE_ENV}=1 shows it here)" if self.log_path else "verbose"
        self.say(f"keep_samd: run {self.run_id}, {len(self.components)} components; {where}")
        logging.getLogger().addHandler(self._hook)
        self._thread = threading.Thread(target=self._ticker, name="run-console", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        self._stop.set()
        self._thread.join(timeout=5)  # no progress line after the last one below
        logging.getLogger().removeHandler(self._hook)
        if exc is not None and self._current is not None:
            node, t0, _ = self._current
            self.say(f"{self._prefix(node)} FAILED after {_duration(time.time() - t0)}"
                     + (f" (details: {self.log_path})" if self.log_path else ""))
        elif exc is None:
            for line in self.summary():
                self.say(line)
        return False

    def _ticker(self):
        """A line when a component has run `progress_seconds` without one: the run is alive, and where."""
        while not self._stop.wait(min(1.0, self.progress_seconds)):
            with self._lock:
                current, last = self._current, self._last_line
            if current is None or time.time() - last < self.progress_seconds:
                continue
            node, t0, _ = current
            done = self.components.index(node) if node in self.components else 0
            self.say(f"{self._prefix(node)} ... {_duration(time.time() - t0)} so far "
                     f"({done}/{len(self.components)} done, run {_duration(time.time() - self._started)})")

    # --- events from the runner's log ---

    def started(self, node: str) -> None:
        self._current, self._cached = (node, time.time(), None), False
        self.say(f"{self._prefix(node)} started")

    def execution(self, execution_id: str) -> None:
        if self._current is not None:
            self._current = (self._current[0], self._current[1], int(execution_id))

    def cached(self, execution_id: str) -> None:
        self.execution(execution_id)
        self._cached = True

    def finished(self, node: str) -> None:
        current, self._current = self._current, None
        t0, execution_id = (current[1], current[2]) if current and current[0] == node else (time.time(), None)
        try:
            figure = self.key_figure(node, execution_id)
        except Exception as e:  # noqa: BLE001 - a figure we cannot read must not fail the run
            figure = f"(no figure: {type(e).__name__}: {e})"
        self.say(f"{self._prefix(node)} done in {_duration(time.time() - t0)}" + (" (cached)" if self._cached else "")
                 + (f"  {figure}" if figure else ""))

    # --- key figures, from the execution's output artifacts ---

    def outputs(self, execution_id: Optional[int]) -> Dict[str, List]:
        """{output key: [MLMD artifacts]} of one execution."""
        if execution_id is None:
            return {}
        from ml_metadata.proto import metadata_store_pb2

        if self._store is None:
            self._store = read_only_store(self.metadata_path)
        events = [e for e in self._store.get_events_by_execution_ids([execution_id])
                  if e.type == metadata_store_pb2.Event.OUTPUT]
        artifacts = {a.id: a for a in self._store.get_artifacts_by_id([e.artifact_id for e in events])}
        out: Dict[str, List] = {}
        for e in events:
            key = e.path.steps[0].key if e.path.steps else ""
            out.setdefault(key, []).append(artifacts[e.artifact_id])
        return out

    def key_figure(self, node: str, execution_id: Optional[int]) -> str:
        figures = {}
        for key, artifacts in self.outputs(execution_id).items():
            for artifact in artifacts:
                figure = _figure(self, key, artifact)
                if figure:
                    figures.setdefault(key, []).append(figure)
        if "model_run" in figures:  # a Trainer: its validation AUC says more than its epochs
            figures.pop("model", None)
        return "; ".join(f for per in figures.values() for f in per)

    # --- the end ---

    def summary(self) -> List[str]:
        names = list(self.evaluations) + [n for n in self.pushed if n not in self.evaluations]
        lines = [f"keep_samd: run finished in {_duration(time.time() - self._started)}", ""]
        if names:
            width = max(len("model"), *map(len, names))
            lines.append(f"  {'model':<{width}}  {'test AUC':>8}  {'blessed':<7}  pushed version")
            for name in names:
                e = self.evaluations.get(name, {})
                auc = f"{e['auc']:.3f}" if e.get("auc") is not None else "-"
                blessed = {True: "yes", False: "no"}.get(e.get("blessed"), "-")
                lines.append(f"  {name:<{width}}  {auc:>8}  {blessed:<7}  {self.pushed.get(name, 'not pushed')}")
            lines.append("")
            refused = [(n, self.evaluations[n].get("reason")) for n in names
                       if self.evaluations.get(n, {}).get("blessed") is False]
            if refused:
                lines += ["  not blessed:"] + [f"    {n}: {why or '-'}" for n, why in refused] + [""]
        lines.append(f"  served models: {os.path.join(self.output_dir, 'serving')}")
        if self.report_dir:
            lines.append(f"  report: {os.path.join(self.report_dir, 'report.html')} "
                         f"(or `python -m pipelines.report --output {self.output_dir}`)")
        if self.log_path:
            lines.append(f"  log: {self.log_path}")
        return lines


def read_only_store(metadata_path: str):
    """An ML Metadata store on a run's SQLite file, opened read-only (the run may still be writing it)."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def node_executions(metadata_path: str) -> Dict[str, List]:
    """{node id: its MLMD executions, oldest first} of the pipeline whose metadata is at `metadata_path`."""
    store = read_only_store(metadata_path)
    return {context.name.split(".", 1)[1]: sorted(store.get_executions_by_context(context.id), key=lambda e: e.id)
            for context in store.get_contexts_by_type("node")}


def _property(artifact, name):
    value = artifact.custom_properties.get(name)
    if value is None:
        return None
    return value.string_value or value.int_value


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _figure(console: RunConsole, key: str, artifact) -> str:
    """The key figure of one output artifact, or "" where it has none worth a line."""
    uri = artifact.uri
    if key == "report" and os.path.isfile(os.path.join(uri, "report.json")):  # RawDataCheck
        report = _read_json(os.path.join(uri, "report.json"))
        return f"{report['rows']} rows in {len(report['spans'])} day(s)"
    if key == "statistics":
        return _statistics(uri)
    if key == "anomalies":
        return _anomalies(uri)
    if key == "model_run":
        return _validation_auc(uri)
    if key == "model" and os.path.isfile(os.path.join(uri, "training.json")):
        return _training(_read_json(os.path.join(uri, "training.json")))
    if key == "tuner_results" and os.path.isfile(os.path.join(uri, "tuner_results.json")):  # a Tuner
        return _tuning(_read_json(os.path.join(uri, "tuner_results.json")))
    if key == "evaluation":
        record = _read_json(os.path.join(uri, "evaluation.json"))
        return _evaluation(console, record)
    if key == "pushed_model":
        return _pushed(console, artifact)
    if key == "knowledge" and _property(artifact, "knowledge_version"):
        return f"knowledge cache version {_property(artifact, 'knowledge_version')}"
    if key == "report" and os.path.isfile(os.path.join(uri, "metrics.json")):  # EvaluationReport
        console.report_dir = uri
        return f"report in {uri}"
    return ""


def _split_protos(uri: str, file_name: str, proto_class):
    """(split name, parsed proto) of each Split-*/file_name under an artifact (any filesystem fileio reads)."""
    from tfx.dsl.io import fileio

    for split_dir in sorted(fileio.glob(os.path.join(uri, "Split-*"))):
        path = os.path.join(split_dir, file_name)
        if not fileio.exists(path):
            continue
        proto = proto_class()
        with fileio.open(path, "rb") as f:
            proto.ParseFromString(f.read())
        yield os.path.basename(split_dir.rstrip("/"))[len("Split-"):], proto


def _statistics(uri: str) -> str:
    from tensorflow_metadata.proto.v0 import statistics_pb2

    rows = [f"{split} {sum(d.num_examples for d in stats.datasets)}" for split, stats in
            _split_protos(uri, "FeatureStats.pb", statistics_pb2.DatasetFeatureStatisticsList)]
    return ("rows: " + ", ".join(rows)) if rows else ""


def _anomalies(uri: str) -> str:
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    found = []
    for split, anomalies in _split_protos(uri, "SchemaDiff.pb", anomalies_pb2.Anomalies):
        found += [f"{split}/{name}" for name in anomalies.anomaly_info]
        if anomalies.HasField("dataset_anomaly_info"):
            found.append(f"{split}/<dataset>")
    if not found:
        return "no anomalies"
    return f"{len(found)} anomalies: " + ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _validation_auc(uri: str) -> str:
    path = os.path.join(uri, "history.json")
    if not os.path.isfile(path):
        return ""
    history = _read_json(path)
    history = history.get("history", history)  # nested since one trainer trains every Keras model
    scores = history.get("val_auc_click") or []
    if not scores:
        return ""
    return f"validation click AUC {max(scores):.3f} (best of {_epochs(len(scores))})"


def _tuning(trials: List[Dict]) -> str:
    """A Tuner's tuner_results.json ({trial_id, score, <hyperparameter>: value} per completed trial): the best."""
    if not trials:
        return "no trial completed"
    best = max(trials, key=lambda t: t["score"])
    values = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.items()
                       if k not in ("trial_id", "score"))
    return f"validation click AUC {best['score']:.3f} (best of {len(trials)} trials: {values})"


def _training(record: Dict) -> str:
    """What a trainer recorded beside its model (training.json): SAMD and the downstream model have no model_run."""
    parts = []
    scores = (record.get("history") or {}).get("val_auc_click") or []
    if scores:
        parts.append(f"validation click AUC {max(scores):.3f} (best of {_epochs(len(scores))})")
    elif record.get("epochs"):
        best = record.get("best_epoch")  # SAMD's is per student: a dict
        parts.append(_epochs(record["epochs"])
                     + (f", best {best}" if isinstance(best, int) else ""))
    if (record.get("warm_start") or {}).get("base_model"):
        parts.append(f"warm-started ({record['warm_start'].get('restored', 0)} variables restored)")
    return "; ".join(parts)


def _evaluation(console: RunConsole, record: Dict) -> str:
    aucs = []
    for name, blessing in record.get("blessings", {}).items():
        auc = (record.get("metrics", {}).get(blessing.get("slice", "ALL"), {}).get("click") or {}).get("auc")
        console.evaluations[name] = {"auc": auc, "blessed": bool(blessing.get("blessed")),
                                     "reason": blessing.get("reason")}
        aucs.append((name, auc, bool(blessing.get("blessed"))))
    if len(aucs) == 1:
        name, auc, blessed = aucs[0]
        return (f"test click AUC {auc:.3f}, " if auc is not None else "") + (
            "blessed" if blessed else f"NOT blessed: {console.evaluations[name]['reason']}")
    scored = [a for _, a, _ in aucs if a is not None]
    blessed = sum(b for _, _, b in aucs)
    span = f"test click AUC {min(scored):.3f}-{max(scored):.3f}, " if scored else ""
    refused = [name for name, _, b in aucs if not b]
    return f"{len(aucs)} models, {span}{blessed}/{len(aucs)} blessed" + (
        f" (not: {', '.join(refused)})" if refused else "")


def _pushed(console: RunConsole, artifact) -> str:
    listing = os.path.join(artifact.uri, "pushed.json")  # SamdPusher: {model: pushed folder}
    if os.path.isfile(listing):
        pushed = {name: os.path.basename(os.path.normpath(path)) for name, path in _read_json(listing).items()}
    elif _property(artifact, "pushed"):
        destination = os.path.normpath(str(_property(artifact, "pushed_destination")))
        version = str(_property(artifact, "pushed_version") or os.path.basename(destination))
        pushed = {os.path.basename(os.path.dirname(destination)): version}
    else:
        pushed = {}
    console.pushed.update(pushed)
    if not pushed:
        return "not pushed (not blessed)"
    if len(pushed) == 1:
        (name, version), = pushed.items()
        return f"pushed {name} version {version}"
    return f"pushed {len(pushed)} models, version {sorted(set(pushed.values()))[-1]}"
