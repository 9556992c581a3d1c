import json
import os

import pytest

pytestmark = pytest.mark.slow


def test_serving_bench_times_every_mode_a_swap_and_a_big_request(bench_run, tmp_path):
    from bench import serving

    output = tmp_path / "serving.json"
    examples = os.path.join(bench_run["run"], "pipelines", "keep_samd", "CsvExampleGen", "examples", "*",
                            "Split-test", "*")
    serving.main([os.path.join(bench_run["run"], "serving", "logistic_regression"), examples,
                  "--batch_sizes", "1,2", "--seconds", "0.3", "--rounds", "1", "--clients", "2",
                  "--big_request_mb", "1", "--swap", "1", "--h2load", "no", "--output", str(output)])
    got = json.loads(output.read_text())

    modes = {(r["mode"], r["batch"], r["clients"]) for r in got["results"]}
    expected = {(m, b, c) for m in ("in_process", "grpc", "rest") for b in (1, 2) for c in (1, 2)}
    assert modes == expected | {("grpc_batching", b, 2) for b in (1, 2)}
    for r in got["results"]:
        assert r["requests"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"] and r["examples_per_s"] > 0, r
    assert {t["mode"] for t in got["targets"]} == {"grpc", "rest"}  # batch 1, one client
    assert all(isinstance(t["met"], bool) for t in got["targets"])

    swap = got["swap"]
    assert swap["requests"] > 0 and 1 in swap["versions_seen"] and swap["p50_ms"] <= swap["max_ms"]
    assert [b["setting"] for b in got["big_request"]] == ["no example cap (before)", "default caps (after)"]
    for b in got["big_request"]:
        assert b["status"] == "OK" and b["examples"] > 0 and b["peak_rss_mb"] >= b["rss_idle_mb"] > 0, b
