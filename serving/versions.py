"""Version management: which versions of which models are loaded, and atomic swaps.

Each model's base path is scanned for `<integer>/saved_model.pb`. A version the policy
wants is loaded and warmed up off to the side; only then is the model's snapshot (an
immutable {version: Servable} mapping) replaced in one assignment, and versions that
fell out of the policy are unloaded after it. Requests read the snapshot once, so a
swap never fails one. Versions that fail to load are never served and are retried
with backoff (at once if their files change), and meanwhile the policy falls back to
the versions that do load.
"""

import logging
import os
import threading
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Dict, List, Mapping, Optional

import grpc
from tensorflow_serving.apis import get_model_status_pb2

from serving.config import ModelSpec, check_model_name, is_version_dir_name
from serving.errors import ServingError, not_found
from serving.servable import BatchingOptions, Servable
from serving.stats import Stats

log = logging.getLogger("serving")

MAX_RETRY_BACKOFF_S = 30.0


@dataclass
class _Failure:
    fingerprint: tuple
    attempts: int
    retry_at: float
    error: str


def _stat(path: str) -> tuple:
    try:
        st = os.stat(path)
        return (st.st_mtime_ns, st.st_size)
    except OSError:
        return (None, None)


class Model:
    """One configured model and the versions of it currently served."""

    def __init__(self, spec: ModelSpec, batching: Optional[BatchingOptions], stats: Stats,
                 retry_base_s: float = 1.0):
        self.spec = spec
        self._batching = batching
        self._stats = stats
        self._retry_base = max(0.1, retry_base_s)
        self._servables: Mapping[int, Servable] = MappingProxyType({})
        self._failures: Dict[int, _Failure] = {}
        self._loading: Optional[int] = None

    @property
    def servables(self) -> Mapping[int, Servable]:
        """The current snapshot; never mutated, only replaced."""
        return self._servables

    def scan(self) -> Dict[int, tuple]:
        """{version: fingerprint} of complete-looking version folders under the base path.

        Non-integer names (a Pusher's temp dir) and folders without saved_model.pb (still
        being copied) are not versions yet.
        """
        found = {}
        try:
            names = os.listdir(self.spec.base_path)
        except OSError:
            return found
        for name in names:
            vdir = os.path.join(self.spec.base_path, name)
            pb = os.path.join(vdir, "saved_model.pb")
            if is_version_dir_name(name) and os.path.isfile(pb):
                found[int(name)] = (_stat(vdir), _stat(pb), _stat(os.path.join(vdir, "variables")))
        return found

    def sync(self) -> None:
        """Loads what the policy wants, swaps the snapshot, unloads the rest. Caller serialises."""
        on_disk = self.scan()
        now = time.monotonic()
        for v in list(self._failures):
            f = self._failures[v]
            if v not in on_disk or f.fingerprint != on_disk[v]:
                del self._failures[v]  # gone, or rewritten: worth a fresh try
        blocked = {v for v, f in self._failures.items() if f.retry_at > now}
        current = dict(self._servables)
        while True:
            target = self.spec.policy.select(v for v in on_disk if v not in blocked)
            to_load = [v for v in reversed(target) if v not in current]
            if not to_load:
                break
            for v in to_load:
                servable = self._load(v, on_disk[v])
                if servable is None:
                    blocked.add(v)
                else:
                    current[v] = servable
        keep = {v: current[v] for v in target}
        dropped = [s for v, s in current.items() if v not in keep]
        if keep.keys() != self._servables.keys() or any(keep[v] is not self._servables.get(v) for v in keep):
            self._servables = MappingProxyType(keep)
        for s in dropped:
            s.close()
            self._stats.add("unloads")
            log.info("unloaded model %s version %d", self.spec.name, s.version)

    def _load(self, version: int, fingerprint: tuple) -> Optional[Servable]:
        path = os.path.join(self.spec.base_path, str(version))
        self._loading = version
        start = time.monotonic()
        servable = None
        try:
            servable = Servable(self.spec.name, version, path, self._batching, self._stats)
            warm = servable.warmup()
        except Exception as e:  # noqa: BLE001 - any failure means "not servable yet"
            if servable is not None:
                servable.close()
            prev = self._failures.get(version)
            attempts = (prev.attempts if prev else 0) + 1
            delay = min(MAX_RETRY_BACKOFF_S, self._retry_base * 2 ** (attempts - 1))
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            self._failures[version] = _Failure(fingerprint, attempts, time.monotonic() + delay, msg)
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
        if not snapshot:
            why = "; ".join(f"version {v}: {f.error}" for v, f in sorted(dict(self._failures).items()))
            raise ServingError(grpc.StatusCode.UNAVAILABLE,
                               f"model {self.spec.name!r} has no loaded version under {self.spec.base_path}"
                               + (f" ({why})" if why else ""))
        if label:
            if label not in self.spec.labels:
                raise not_found(f"unrecognized version label {label!r} for model {self.spec.name!r} "
                                f"(labels: {sorted(self.spec.labels)})")
            version = self.spec.labels[label]
        if version is None:
            return snapshot[max(snapshot)]
        servable = snapshot.get(version)
        if servable is None:
            raise not_found(f"model {self.spec.name!r} version {version} is not loaded "
                            f"(loaded: {sorted(snapshot)})")
        return servable

    def status(self, version: Optional[int] = None,
               label: Optional[str] = None) -> List[get_model_status_pb2.ModelVersionStatus]:
        if label:
            if label not in self.spec.labels:
                raise not_found(f"unrecognized version label {label!r} for model {self.spec.name!r}")
            version = self.spec.labels[label]
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
                raise not_found(f"model {self.spec.name!r} has no version {version}")
            return [states[version]]
        if not states:
            raise not_found(f"could not find any versions of model {self.spec.name!r}")
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
                 stats: Optional[Stats] = None, retry_base_s: float = 1.0):
        self.stats = stats or Stats()
        self._batching = batching
        self._retry_base = retry_base_s
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
            raise not_found(f"model {name!r} is not served (models: {sorted(self._models)})")
        return model

    def resolve(self, name: str, version: Optional[int] = None, label: Optional[str] = None) -> Servable:
        return self.model(name).resolve(version, label)

    def sync(self) -> None:
        """One poll of every base path (what the poller does every interval)."""
        with self._sync_lock:
            for model in self._models.values():
                model.sync()

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
                    model = Model(spec, self._batching, self.stats, self._retry_base)
                model.sync()
                new[name] = model
            self._models = MappingProxyType(new)
            for name, model in old.items():
                if new.get(name) is not model:
                    model.close()

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
