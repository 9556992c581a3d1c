"""TF Serving's request metrics and its Prometheus page (--monitoring_config_file).

The metrics are the ones tensorflow_model_server counts per request, under its names
(servables/tensorflow/util.cc), and the page is written as its exporter writes it
(util/prometheus_exporter.cc): `/tensorflow/serving/request_count` becomes
`:tensorflow:serving:request_count`, histograms get `_bucket{le=...}`, `_sum` and
`_count` lines, metrics in name order. Dashboards and alerts built on TF Serving read
the same series here.
"""

import bisect
import math
import re
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import grpc

from serving.config import read_text_proto
from serving.errors import ServingError
from serving.protos import F, message_classes

DEFAULT_PATH = "/monitoring/prometheus/metrics"  # PrometheusExporter::kPrometheusPath


def _exponential(scale: float, growth: float, count: int) -> List[float]:
    """tensorflow::monitoring::Buckets::Exponential: `count` limits, then an open last bucket."""
    return [scale * growth ** i for i in range(count)] + [math.inf]


class _Counter:
    def __init__(self, name: str, labels: Sequence[str]):
        self.name, self.labels = name, tuple(labels)
        self.values: Dict[Tuple[str, ...], int] = defaultdict(int)

    def add(self, labels: Tuple[str, ...], n: int = 1) -> None:
        self.values[labels] += n

    def lines(self) -> List[str]:
        name = prometheus_name(self.name)
        return [f"# TYPE {name} counter"] + [f"{name}{{{_labels(self.labels, v)}}} {n}"
                                             for v, n in sorted(self.values.items())]


class _Histogram:
    def __init__(self, name: str, labels: Sequence[str], limits: List[float]):
        self.name, self.labels, self.limits = name, tuple(labels), limits
        self.buckets: Dict[Tuple[str, ...], List[int]] = {}
        self.sums: Dict[Tuple[str, ...], float] = defaultdict(float)

    def add(self, labels: Tuple[str, ...], value: float) -> None:
        counts = self.buckets.setdefault(labels, [0] * len(self.limits))
        counts[bisect.bisect_right(self.limits, value)] += 1  # the first limit above value; the last is inf
        self.sums[labels] += value

    def lines(self) -> List[str]:
        name = prometheus_name(self.name)
        out = [f"# TYPE {name} histogram"]
        for values, counts in sorted(self.buckets.items()):
            labels = _labels(self.labels, values)
            prefix = f"{name}_bucket{{{labels}{',' if labels else ''}"
            total = 0
            for limit, count in zip(self.limits, counts):
                total += count
                out.append(f'{prefix}le="{"+Inf" if math.isinf(limit) else _number(limit)}"}} {total}')
            out.append(f"{name}_sum{{{labels}}} {_number(self.sums[values])}")
            out.append(f"{name}_count{{{labels}}} {total}")
        return out


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def prometheus_name(name: str) -> str:
    """prometheus_exporter.cc GetPrometheusMetricName."""
    out = re.sub(r"[^a-zA-Z0-9_]", ":", name)
    return f"_{out}" if out[:1].isdigit() else out


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    def value(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"')

    return ",".join(f'{re.sub(r"[^a-zA-Z0-9]", "_", n)}="{value(v)}"' for n, v in zip(names, values))


class Metrics:
    """The request metrics of one server; every method is thread-safe."""

    def __init__(self, clock=time.perf_counter):
        self._lock = threading.Lock()
        self._clock = clock
        self._request_count = _Counter("/tensorflow/serving/request_count", ("model_name", "status"))
        # Microseconds: scale 10, growth 1.8, 33 buckets (~20 minutes), as util.cc.
        self._request_latency = _Histogram("/tensorflow/serving/request_latency", ("model_name", "API", "entrypoint"),
                                           _exponential(10, 1.8, 33))
        self._example_counts = _Histogram("/tensorflow/serving/request_example_counts", ("model",),
                                          _exponential(1, 2, 15))
        self._example_total = _Counter("/tensorflow/serving/request_example_count_total", ("model",))
        self._all = [self._example_counts, self._example_total, self._request_count, self._request_latency]

    @contextmanager
    def request(self, model: str, api: str, entrypoint: str) -> Iterator[None]:
        """Counts one request by its outcome's status name and times it (util.cc RecordModelRequestCount,
        RecordRequestLatency)."""
        start = self._clock()
        status = "OK"
        try:
            yield
        except ServingError as e:
            status = e.code.name
            raise
        except Exception:
            status = grpc.StatusCode.INTERNAL.name
            raise
        finally:
            micros = (self._clock() - start) * 1e6
            with self._lock:
                self._request_count.add((model, status))
                self._request_latency.add((model, api, entrypoint), micros)

    def examples(self, model: str, n: int) -> None:
        """util.cc RecordRequestExampleCount: a tf.Example API's rows."""
        with self._lock:
            self._example_counts.add((model,), n)
            self._example_total.add((model,), n)

    def prometheus_page(self) -> str:
        with self._lock:
            lines = [line for metric in sorted(self._all, key=lambda m: m.name) for line in metric.lines()]
        return "\n".join(lines) + "\n"


def _monitoring_config_class():
    """tensorflow_serving/config/monitoring_config.proto's MonitoringConfig."""
    return message_classes("tensorflow_serving/config/monitoring_config.proto", "tensorflow.serving", [
        ("PrometheusConfig", [("enable", 1, F.TYPE_BOOL, ""), ("path", 2, F.TYPE_STRING, "")]),
        ("MonitoringConfig", [("prometheus_config", 1, F.TYPE_MESSAGE, "PrometheusConfig")]),
    ])["MonitoringConfig"]


def read_monitoring_config(path: str) -> Optional[str]:
    """The Prometheus path a MonitoringConfig text proto enables, or None when it does not."""
    config = read_text_proto(path, _monitoring_config_class()(), "monitoring config file")
    if not config.prometheus_config.enable:
        return None
    return config.prometheus_config.path or DEFAULT_PATH
