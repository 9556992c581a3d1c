"""serving.metrics: TF Serving's request metrics and its Prometheus page."""

import re

import grpc
import pytest

from serving.errors import ServingError, invalid
from serving.metrics import DEFAULT_PATH, Metrics, prometheus_name, read_monitoring_config


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_requests_are_counted_by_status_and_timed_in_microseconds():
    clock = Clock()
    metrics = Metrics(clock)
    with metrics.request("m", "Predict", "GRPC"):
        clock.t += 0.000050  # 50 us: the bucket [32.4, 58.32)
    with pytest.raises(ServingError):
        with metrics.request("m", "Predict", "REST"):
            raise invalid("bad")
    metrics.examples("m", 3)
    page = metrics.prometheus_page()
    lines = page.splitlines()
    assert ':tensorflow:serving:request_count{model_name="m",status="OK"} 1' in lines
    assert ':tensorflow:serving:request_count{model_name="m",status="INVALID_ARGUMENT"} 1' in lines
    assert "# TYPE :tensorflow:serving:request_latency histogram" in lines
    grpc_buckets = [line for line in lines if line.startswith(
        ':tensorflow:serving:request_latency_bucket{model_name="m",API="Predict",entrypoint="GRPC",')]
    # Cumulative, 33 limits from 10 us by x1.8, then +Inf (util.cc).
    assert len(grpc_buckets) == 34 and grpc_buckets[-1].endswith('le="+Inf"} 1')
    counts = [int(line.rsplit(" ", 1)[1]) for line in grpc_buckets]
    assert counts[:3] == [0, 0, 0] and counts[3:] == [1] * 31
    assert ':tensorflow:serving:request_latency_sum{model_name="m",API="Predict",entrypoint="GRPC"} 50' in lines
    assert ':tensorflow:serving:request_example_count_total{model="m"} 3' in lines
    # Metrics in name order, as the exporter's std::map.
    types = [line.split()[2] for line in lines if line.startswith("# TYPE")]
    assert types == sorted(types) and page.endswith("\n")


def test_names_and_label_values_are_sanitised_as_the_exporter_does():
    assert prometheus_name("/tensorflow/serving/request_count") == ":tensorflow:serving:request_count"
    metrics = Metrics(Clock())
    with metrics.request('a"b\\c', "Predict", "GRPC"):
        pass
    assert 'model_name="a\\"b\\\\c"' in metrics.prometheus_page()


def test_the_monitoring_config_file_enables_the_page(tmp_path):
    path = tmp_path / "monitoring.config"
    path.write_text('prometheus_config: {\n  enable: true,\n  path: "/metrics/here"\n}\n')
    assert read_monitoring_config(str(path)) == "/metrics/here"
    path.write_text("prometheus_config { enable: true }")
    assert read_monitoring_config(str(path)) == DEFAULT_PATH
    path.write_text("prometheus_config { enable: false }")
    assert read_monitoring_config(str(path)) is None
    path.write_text("prometheus_config { enabled: true }")
    with pytest.raises(ServingError) as info:
        read_monitoring_config(str(path))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert re.search(r"Error parsing text-format tensorflow.serving.MonitoringConfig: 1:\d+", info.value.message)
