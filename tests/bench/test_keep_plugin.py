import json

import pytest

from tests.bench.conftest import SAMD_SCENARIO

pytestmark = pytest.mark.slow


def test_keep_plugin_bench_scores_every_variant_and_times_both_serving_paths(bench_run, tmp_path):
    from bench import keep_plugin
    from trainers.downstream import sub_scenarios

    output = tmp_path / "keep_plugin.json"
    keep_plugin.main(["--run", bench_run["run"], "--data", bench_run["data"], "--steps", "1", "--knowledge_steps",
                      "1", "--seeds", "1", "--scenario", SAMD_SCENARIO, "--seconds", "0.05", "--output", str(output)])
    got = json.loads(output.read_text())

    quality = got["quality"]
    sub = sub_scenarios(f"{bench_run['data']}/scenarios.csv")
    assert quality["scenarios"] == sub and quality["seeds"] == 1
    assert min(quality["train_rows"], quality["validation_rows"], quality["test_rows"]) > 0
    assert set(quality["click"]) == set(keep_plugin.VARIANTS)
    for variant, per in quality["click"].items():
        assert set(per) == {"ALL", *sub}, variant
        assert 0 <= per["ALL"]["auc"] <= 1 and 0 <= per["ALL"]["gauc"] <= 1, variant

    paths = {}
    for r in got["latency"]:
        paths.setdefault((r["mode"], r["batch"]), []).append(r["path"])
    assert sorted(paths) == [("grpc", 1), ("grpc", 64), ("in_process", 1), ("in_process", 64)]
    for timed in paths.values():  # the student, then the plugged path
        assert len(timed) == 2 and timed[0] == f"samd_{SAMD_SCENARIO}", timed
    for r in got["latency"]:
        assert r["requests"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"], r
