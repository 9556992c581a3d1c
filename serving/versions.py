"""Version management: which versions of which models are loaded, and atomic swaps.

Each model's base path is scanned for `<integer>/saved_model.pb`; the folder keeps its
own name, so `00000123/` is version 123, as in TF Serving's
file_system_storage_path_source.cc (of two folders naming one version, the plain
`123/` wins, else the last by name, with a warning). When is a version
folder complete? Pushers should write it as a temporary sibling and rename it into
place, but rsync, gsutil and cp write in place, in any order. So a folder is loaded
only when it is *stable*:

  1. settled: no file or folder in it changed (by ctime, which copiers cannot
     back-date the way they preserve mtimes) for `settle_s` seconds, and
  2. complete: saved_model.pb parses, and every file it references is there:
     variables/variables.index with every variables.data-?????-of-N shard, and each
     asset named in its asset_file_def.

A settled folder that is not complete is a load failure (reported in GetModelStatus,
retried when its files change). A loaded version is re-checked at every poll: when
its files change it keeps serving, and is reloaded once the new files are stable.

A version the policy
wants is loaded and warmed up off to the side; only then is the model's snapshot (an
immutable {version: Servable} mapping) replaced in one assignment, and versions that
fell out of the policy are unloaded after it. Requests read the snapshot once, so a
swap never fails one. Versions that fail to load are never served and are retried
with backoff (at once if their files change), and meanwhile the policy falls back to
the versions that do load.
"""

import gc
import logging
import os
import threading
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Dict, List, Mapping, Optional

import grpc
from tensorflow_serving.apis import get_model_status_pb2

from serving.config import ModelSpec, check_model_name, is_version_dir_name
from serving.errors import ServingError, invalid, not_found, servable_not_found
from serving.limits import ExampleBudget
from serving.metrics import Metrics
from serving.servable import TFLITE_FILE, BatchingOptions, Servable
from serving.stats import Stats

log = logging.getLogger("serving")

MAX_RETRY_BACKOFF_S = 30.0


@dataclass
class _Failure:
    fingerprint: tuple
    attempts: int
    retry_at: float
    error: str


@dataclass(frozen=True)
class _OnDisk:
    fingerprint: tuple  # the folder, then (relpath, size, mtime_ns, ctime_ns) of everything in it
    changed_ns: int  # newest ctime in the folder, wall clock
    path: str


def _fingerprint(vdir: str) -> Optional[_OnDisk]:
    entries, newest = [], 0
    try:
        st = os.stat(vdir)
        newest = st.st_ctime_ns
        for root, dirs, files in os.walk(vdir):
            dirs.sort()
            for name in dirs + sorted(files):
                path = os.path.join(root, name)
                try:
                    st = os.lstat(path)
                except OSError:  # removed while we walk: it is changing, try next poll
                    return None
                entries.append((os.path.relpath(path, vdir), st.st_size, st.st_mtime_ns, st.st_ctime_ns))
                newest = max(newest, st.st_ctime_ns)
    except OSError:
        return None
    return _OnDisk((vdir, *entries), newest, vdir)


def check_complete(vdir: str) -> None:
    """Raises ValueError naming what is missing from a SavedModel folder (rule 2 above)."""
    from tensorflow.core.protobuf import saved_model_pb2

    try:
        with open(os.path.join(vdir, "saved_model.pb"), "rb") as f:
            saved = saved_model_pb2.SavedModel.FromString(f.read())
    except Exception as e:  # noqa: BLE001 - DecodeError or OSError: either way not loadable
        raise ValueError(f"saved_model.pb cannot be read: {e}") from e
    if not saved.meta_graphs:
        raise ValueError("saved_model.pb holds no MetaGraph")
    missing = []
    var_dir = os.path.join(vdir, "variables")
    names = set(os.listdir(var_dir)) if os.path.isdir(var_dir) else set()
    has_vars = any(n.WhichOneof("kind") == "variable" for mg in saved.meta_graphs
                   for n in mg.object_graph_def.nodes)
    shards = [n for n in names if n.startswith("variables.data-")]
    if has_vars or "variables.index" in names or shards:
        if "variables.index" not in names:
            missing.append("variables/variables.index")
        if not shards:
            missing.append("variables/variables.data-*")
        for count in {n.rsplit("-of-", 1)[-1] for n in shards}:
            for i in range(int(count) if count.isdigit() else 0):
                shard = f"variables.data-{i:05d}-of-{count}"
                if shard not in names:
                    missing.append(f"variables/{shard}")
    for mg in saved.meta_graphs:
        for asset in mg.asset_file_def:
            if not os.path.isfile(os.path.join(vdir, "assets", asset.filename)):
                missing.append(f"assets/{asset.filename}")
    if missing:
        raise ValueError(f"incomplete SavedModel, missing {sorted(set(missing))}")


def _collect_unloaded() -> None:
    """An unloaded version is cyclic garbage (TF objects refer to each other): collect it
    now, in the poller, rather than in whichever request's allocation trips the next full
    collection. Cheap since TensorFlow's own objects are frozen (ModelServer.start)."""
    gc.collect()


class Model:
    """One configured model and the versions of it currently served."""

    def __init__(self, spec: ModelSpec, batching: Optional[BatchingOptions], stats: Stats,
                 retry_base_s: float = 1.0, settle_s: float = 0.0, clock: Callable[[], float] = time.time,
                 prefer_tflite: bool = False):
        self.spec = spec
        self._settle_ns = int(max(0.0, settle_s) * 1e9)
        self._clock = clock  # wall clock: compared with file ctimes
        self._loaded: Dict[int, tuple] = {}  # version -> fingerprint it was loaded from
        self._duplicates: Dict[int, List[str]] = {}  # version -> its folders, when more than one
        self.pending_until: Optional[float] = None  # when the next unsettled folder settles
        self._batching = batching
        self._stats = stats
        self._retry_base = max(0.1, retry_base_s)
        self._prefer_tflite = prefer_tflite  # --prefer_tflite_model: model.tflite is a version too
        self._servables: Mapping[int, Servable] = MappingProxyType({})
        self._failures: Dict[int, _Failure] = {}
        self._loading: Optional[int] = None

    @property
    def servables(self) -> Mapping[int, Servable]:
        """The current snapshot; never mutated, only replaced."""
        return self._servables

    def scan(self) -> Dict[int, _OnDisk]:
        """{version: what is on disk} for every `<integer>/saved_model.pb` under the base path.

        Non-integer names (a Pusher's temp dir) and folders without saved_model.pb are
        not versions yet.
        """
        found, folders = {}, {}
        try:
            names = sorted(os.listdir(self.spec.base_path))
        except OSError:
            return found
        for name in names:
            files = [f for f in ("saved_model.pb", TFLITE_FILE if self._prefer_tflite else None) if f]
            if is_version_dir_name(name) and any(os.path.isfile(os.path.join(self.spec.base_path, name, f))
                                                 for f in files):
                folders.setdefault(int(name), []).append(name)
        for version, names in folders.items():
            name = str(version) if str(version) in names else names[-1]
            if len(names) > 1 and self._duplicates.get(version) != names:
                self._duplicates[version] = names  # warn once per layout, not at every poll
                log.warning("Duplicate version directories detected. Version %d of model %s will be loaded from "
                            "%s, %s will be ignored.", version, self.spec.name, name,
                            ", ".join(n for n in names if n != name))
            disk = _fingerprint(os.path.join(self.spec.base_path, name))
            if disk is not None:
                found[version] = disk
        return found

    def sync(self) -> None:
        """Loads what the policy wants, swaps the snapshot, unloads the rest. Caller serialises."""
        on_disk = self.scan()
        now = time.monotonic()
        now_ns = int(self._clock() * 1e9)
        for v in list(self._failures):
            f = self._failures[v]
            if v not in on_disk or f.fingerprint != on_disk[v].fingerprint:
                del self._failures[v]  # gone, or rewritten: worth a fresh try
        unsettled = {v: d.changed_ns + self._settle_ns for v, d in on_disk.items()
                     if now_ns - d.changed_ns < self._settle_ns}
        self.pending_until = min(unsettled.values()) / 1e9 if unsettled else None
        blocked = {v for v, f in self._failures.items() if f.retry_at > now}
        current = dict(self._servables)
        # A loaded version stays a candidate while its files change under it.
        candidates = {v for v in on_disk if v not in unsettled or v in current}
        reloaded = {}
        while True:
            target = self.spec.policy.select(v for v in candidates if v not in blocked or v in current)
            to_load = [v for v in reversed(target) if v not in blocked and (
                v not in current or (v not in unsettled and v not in reloaded
                                     and self._loaded.get(v) != on_disk[v].fingerprint))]
            if not to_load:
                break
            for v in to_load:
                servable = self._load(v, on_disk[v])
                if servable is None:
                    blocked.add(v)
                    continue
                if v in current:
                    reloaded[v] = current[v]
                    log.info("model %s version %d changed on disk: reloaded", self.spec.name, v)
                current[v] = servable
                self._loaded[v] = on_disk[v].fingerprint
        keep = {v: current[v] for v in target}
        dropped = [s for v, s in current.items() if v not in keep] + list(reloaded.values())
        if keep.keys() != self._servables.keys() or any(keep[v] is not self._servables.get(v) for v in keep):
            self._servables = MappingProxyType(keep)
        for v in list(self._loaded):
            if v not in keep:
                del self._loaded[v]
        for s in dropped:
            s.close()
            self._stats.add("unloads")
            log.info("unloaded model %s version %d", self.spec.name, s.version)
        if dropped:
            _collect_unloaded()

    def _load(self, version: int, disk: _OnDisk) -> Optional[Servable]:
        path = disk.path
        self._loading = version
        start = time.monotonic()
        servable = None
        try:
            tflite = self._prefer_tflite and os.path.isfile(os.path.join(path, TFLITE_FILE))
            if not tflite:  # a .tflite file is one file: nothing else to wait for
                check_complete(path)
            servable = Servable(self.spec.name, version, path, self._batching, self._stats, self._prefer_tflite)
            warm = servable.warmup()
        except Exception as e:  # noqa: BLE001 - any failure means "not servable yet"
            if servable is not None:
                servable.close()
            prev = self._failures.get(version)
            attempts = (prev.attempts if prev else 0) + 1
            delay = min(MAX_RETRY_BACKOFF_S, self._retry_base * 2 ** (attempts - 1))
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            self._failures[version] = _Failure(disk.fingerprint, attempts, time.monotonic() + delay, msg)
            self._stats.add("load_failures")
            log.warning("failed to load model %s version %d from %s (attempt %d, retry in %.0fs): %s",
                        self.spec.name, version, path, attempts, delay, msg)
            return None
        finally:
            self._loading = None
        self._failures.pop(version, None)
        self._stats.add("loads")
        log.info("loaded model %s version %d from %s in %.2fs (%d warmup request(s))",
                 self.spec.name, version, path, time.monotonic() - start, warm)
        return servable

    def resolve(self, version: Optional[int] = None, label: Optional[str] = None) -> Servable:
        snapshot = self._servables
        if label:
            version = self._label_version(label)
        if not snapshot:
            why = "; ".join(f"version {v}: {f.error}" for v, f in sorted(dict(self._failures).items()))
            raise servable_not_found(self.spec.name, version, f"no loaded version under {self.spec.base_path}"
                                     + (f": {why}" if why else ""))
        if version is None:
            return snapshot[max(snapshot)]
        servable = snapshot.get(version)
        if servable is None:
            raise servable_not_found(self.spec.name, version, f"loaded: {sorted(snapshot)}")
        return servable

    def _label_version(self, label: str) -> int:
        if label not in self.spec.labels:
            # server_core.cc GetModelVersionForLabel: INVALID_ARGUMENT, this message.
            raise invalid(f"Unrecognized servable version label: {label}")
        return self.spec.labels[label]

    def status(self, version: Optional[int] = None,
               label: Optional[str] = None) -> List[get_model_status_pb2.ModelVersionStatus]:
        if label:
            version = self._label_version(label)
        states = {}
        for v, f in dict(self._failures).items():  # a copy: the poller may be updating it
            s = get_model_status_pb2.ModelVersionStatus(
                version=v, state=get_model_status_pb2.ModelVersionStatus.END)
            s.status.error_code = grpc.StatusCode.UNKNOWN.value[0]
            s.status.error_message = f.error
            states[v] = s
        loading = self._loading
        if loading is not None:
            states[loading] = get_model_status_pb2.ModelVersionStatus(
                version=loading, state=get_model_status_pb2.ModelVersionStatus.LOADING)
        for v in self._servables:
            states[v] = get_model_status_pb2.ModelVersionStatus(
                version=v, state=get_model_status_pb2.ModelVersionStatus.AVAILABLE)
        for s in states.values():
            s.status.SetInParent()  # present even when OK, as TF Serving reports it
        if version is not None:
            if version not in states:
                # get_model_status_impl.cc's texts.
                raise not_found(f"Could not find version {version} of model {self.spec.name}")
            return [states[version]]
        if not states:
            raise not_found(f"Could not find any versions of model {self.spec.name}")
        return [states[v] for v in sorted(states, reverse=True)]

    def close(self) -> None:
        snapshot, self._servables = self._servables, MappingProxyType({})
        for s in snapshot.values():
            s.close()
            self._stats.add("unloads")
            log.info("unloaded model %s version %d", self.spec.name, s.version)


class ModelRegistry:
    """All configured models; reloads and polls are serialised, lookups take no lock."""

    def __init__(self, specs: Mapping[str, ModelSpec], batching: Optional[BatchingOptions] = None,
                 stats: Optional[Stats] = None, retry_base_s: float = 1.0, settle_s: float = 0.0,
                 clock: Callable[[], float] = time.time, budget: Optional[ExampleBudget] = None,
                 allow_reload: bool = True, base_path_prefix: str = "", prefer_tflite: bool = False):
        self.stats = stats or Stats()
        self.metrics = Metrics()
        self.budget = budget or ExampleBudget()
        self.allow_reload = allow_reload
        self.prefer_tflite = prefer_tflite
        self.base_path_prefix = base_path_prefix
        self._batching = batching
        self._retry_base = retry_base_s
        self._settle_s = settle_s
        self._clock = clock
        self._sync_lock = threading.Lock()
        self._models: Mapping[str, Model] = MappingProxyType({})
        self._stop = threading.Event()
        self._poller: Optional[threading.Thread] = None
        self.reload(specs)

    @property
    def models(self) -> Mapping[str, Model]:
        return self._models

    def model(self, name: str) -> Model:
        check_model_name(name)
        model = self._models.get(name)
        if model is None:
            raise not_found(f"Could not find any versions of model {name}")  # get_model_status_impl.cc
        return model

    def resolve(self, name: str, version: Optional[int] = None, label: Optional[str] = None) -> Servable:
        check_model_name(name)
        model = self._models.get(name)
        if model is None:
            raise servable_not_found(name, version, f"models served: {sorted(self._models)}")
        return model.resolve(version, label)

    def sync(self) -> None:
        """One poll of every base path (what the poller does every interval)."""
        with self._sync_lock:
            for model in self._models.values():
                model.sync()

    def unavailable(self, names, failed_only: bool = False) -> Dict[str, str]:
        """{model: why} for the named models that have no loaded version (`failed_only`: those whose
        versions failed to load, not those with no version on disk yet)."""
        out = {}
        for name in names:
            model = self._models.get(name)
            if model is not None and not model.servables and (model._failures or not failed_only):
                why = "; ".join(f"version {v}: {f.error}" for v, f in sorted(dict(model._failures).items()))
                out[name] = why or f"no version found under {model.spec.base_path}"
        return out


    def reload(self, specs: Mapping[str, ModelSpec]) -> None:
        """Switches to a new model list; new models are loaded before they become visible."""
        with self._sync_lock:
            old = self._models
            new = {}
            for name, spec in specs.items():
                model = old.get(name)
                if model is not None and model.spec.base_path == spec.base_path:
                    model.spec = spec
                else:
                    model = Model(spec, self._batching, self.stats, self._retry_base,
                                  self._settle_s, self._clock, self.prefer_tflite)
                model.sync()
                new[name] = model
            self._models = MappingProxyType(new)
            for name, model in old.items():
                if new.get(name) is not model:
                    model.close()

    def wait_settled(self, sleep: Callable[[float], None] = time.sleep) -> None:
        """Syncs until no folder is still settling, so startup serves what was on disk.

        Bounded: a copier that never stops writing holds startup at most ~10 settle intervals.
        """
        for _ in range(10):
            pending = [m.pending_until for m in self._models.values() if m.pending_until is not None]
            if not pending:
                return
            sleep(max(0.0, min(pending) - self._clock()) + 0.01)
            self.sync()

    def start_polling(self, interval_s: float) -> None:
        if interval_s <= 0 or self._poller is not None:
            return

        def loop():
            while not self._stop.wait(interval_s):
                try:
                    self.sync()
                except Exception:  # noqa: BLE001 - the poller must outlive one bad scan
                    log.exception("model poll failed")

        self._poller = threading.Thread(target=loop, name="model-poller", daemon=True)
        self._poller.start()

    def close(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=30)
        with self._sync_lock:
            models, self._models = self._models, MappingProxyType({})
            for model in models.values():
                model.close()


def not_available(failed: Mapping[str, str]) -> ServingError:
    """server_core.cc WaitUntilModelsAvailable's error (UNKNOWN), for {model: why}."""
    return ServingError(grpc.StatusCode.UNKNOWN, f"{len(failed)} model(s) did not become available: {{"
                        + ", ".join(f"{{{name} due to error: {why}}}" for name, why in sorted(failed.items())) + "}")
