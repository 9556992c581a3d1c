"""bench.learning_rate: each model trained by the Trainer's rule at each rate, scored on validation only."""

import json

from tests.bench.conftest import transform_base


def test_each_rate_reaches_the_optimizer_and_runs_merge_across_invocations(transformed, tmp_path, monkeypatch):
    from bench import learning_rate
    from trainers import transformed_data

    read = []
    load = transformed_data.load_transformed
    monkeypatch.setattr(transformed_data, "load_transformed", lambda pattern, *a, **k: (read.append(pattern),
                                                                                         load(pattern, *a, **k))[1])
    base = transform_base(transformed, tmp_path)
    output = tmp_path / "lr.json"
    argv = ["--base", base, "--models", "shared_bottom", "--epochs", "3", "--data", "tiny", "--output", str(output)]
    assert learning_rate.main([*argv, "--rates", "0.001", "0.01"]) == 0
    assert all("Split-test" not in p for p in read) and read  # a rate is a choice: the test day is never read
    assert learning_rate.main([*argv, "--rates", "0.03"]) == 0  # a second invocation adds to the first
    result = json.loads(output.read_text())
    runs = result["runs"]
    assert [(r["rate"], r["optimizer"]) for r in runs] == [(0.001, "Adam(0.001)"), (0.01, "Adam(0.01)"),
                                                          (0.03, "Adam(0.03)")]
    for r in runs:
        curve = r["history"]["val_auc_click"]
        assert 1 <= r["epochs"] == len(curve) <= 3 and r["fields"] == ["learning_rate"]
        assert r["best_val_auc_click"] == max(curve) and curve[r["best_epoch"] - 1] == max(curve)
    assert set(result["summary"]["tiny"]["shared_bottom"]) == {"0.001", "0.01", "0.03"}
    assert result["rule"]["epochs"] == 3 and "--rates 0.03" in result["command"]


def test_pepnet_sets_both_of_its_optimizers_rates():
    from bench.learning_rate import rate_fields
    from models import registry

    assert rate_fields(registry.get("pepnet")) == ["dense_learning_rate", "embedding_learning_rate"]
    assert rate_fields(registry.get("keep_general")) == ["learning_rate"]
