import json

import numpy as np
import pytest

from tests.bench.conftest import SAMD_SCENARIO



def test_each_knowledge_variant_is_paired_with_base_seed_by_seed():
    from bench.keep_plugin import paired_vs_base

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000)
    noise = [rng.random(2000) for _ in range(3)]
    predictions = {"base": noise, "same": list(noise), "oracle": [labels + 0.1 * n for n in noise],
                   "inverted": [1 - labels + 0.1 * n for n in noise]}
    got = paired_vs_base(labels, predictions)
    assert set(got) == {"same", "oracle", "inverted"}
    assert got["same"]["over_seeds"][0] == 0 and got["same"]["verdict"] == "no difference"
    assert got["oracle"]["verdict"] == "above base" and got["inverted"]["verdict"] == "below base"
    for variant, p in got.items():
        assert len(p["per_seed"]) == 3
        low, high = p["over_seeds"][1:]
        assert low <= p["over_seeds"][0] <= high, variant
    one_seed = paired_vs_base(labels, {k: v[:1] for k, v in predictions.items()})
    assert one_seed["oracle"]["over_seeds"] is None and one_seed["oracle"]["verdict"] == "above base"


@pytest.mark.slow
def test_keep_plugin_bench_scores_every_variant_and_times_both_serving_paths(bench_run, tmp_path):
    from bench import keep_plugin
    from trainers.downstream import sub_scenarios

    output = tmp_path / "keep_plugin.json"
    keep_plugin.main(["--run", bench_run["run"], "--data", bench_run["data"], "--steps", "1", "--knowledge_steps",
                      "1", "--epochs", "1", "--seeds", "2", "--scenario", SAMD_SCENARIO, "--seconds", "0.05", "--output", str(output)])
    got = json.loads(output.read_text())

    quality = got["quality"]
    sub = sub_scenarios(f"{bench_run['data']}/scenarios.csv")
    assert quality["scenarios"] == sub and quality["seeds"] == 2 and quality["epochs"] == 1
    assert min(quality["train_rows"], quality["validation_rows"], quality["test_rows"]) > 0
    assert set(quality["click"]) == set(keep_plugin.VARIANTS)
    for variant, per in quality["click"].items():
        assert set(per) == {"ALL", *sub}, variant
        assert 0 <= per["ALL"]["auc"] <= 1 and 0 <= per["ALL"]["gauc"] <= 1, variant
        assert quality["best_epochs"][variant] == [1, 1], variant
    paired = quality["paired_click_auc_vs_base"]
    assert set(paired) == set(keep_plugin.VARIANTS) - {"base"}
    assert all(len(p["per_seed"]) == 2 and p["over_seeds"] is not None for p in paired.values())

    paths = {}
    for r in got["latency"]:
        paths.setdefault((r["mode"], r["batch"]), []).append(r["path"])
    assert sorted(paths) == [("grpc", 1), ("grpc", 64), ("in_process", 1), ("in_process", 64)]
    for timed in paths.values():  # the student, then the plugged path
        assert len(timed) == 2 and timed[0] == f"samd_{SAMD_SCENARIO}", timed
    for r in got["latency"]:
        assert r["requests"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"], r
