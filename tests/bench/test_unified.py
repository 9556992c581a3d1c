import json

import pytest

pytestmark = pytest.mark.slow


def test_unified_bench_scores_every_pushed_unified_model_beside_the_oracle(bench_run, tmp_path):
    from bench import unified

    output = tmp_path / "unified.json"
    unified.main(["--run", bench_run["run"], "--output", str(output)])
    got = json.loads(output.read_text())
    assert got["eval_rows"] > 0
    # What the run pushed, of unified.MODELS.
    assert set(got["models"]) == {"keep_general", "adl", "logistic_regression"}
    assert 0.5 < got["oracle"]["ALL"]["click"] <= 1
    for name, entry in got["models"].items():
        assert set(entry["auc"]) == set(got["oracle"]), name
        assert 0 <= entry["auc"]["ALL"]["click"] <= 1, name
        for timing in entry["latency_ms"].values():
            assert 0 < timing["p50"] <= timing["p99"], name
    assert got["models"]["adl"]["examples_per_second"] > 0  # from its Trainer's history.json

