"""bench.quality: the shared run (tests/bench/conftest.py) is its main() on one seed; these read its table."""

import json

import pytest

from tests.bench.conftest import SAMD_SCENARIO

# e2e as well: its fixture runs the pipeline, so CI starts it with the other pipeline runs and
# the bench tests that read the run (ranked slow, after them) find it built.
pytestmark = [pytest.mark.slow, pytest.mark.e2e]

MODELS = {"keep_general", "samd", "adl", "logistic_regression", "keep_downstream"}


def _read(path):
    with open(path) as f:
        return json.load(f)


def test_quality_table_has_every_model_asked_for_with_aucs_and_paired_intervals(bench_run):
    result = _read(bench_run["quality"])
    assert result["seeds"] == [0] and result["train_steps"] == 1 and result["samd_steps"] == 1
    assert set(result["models"]) == MODELS
    for name in MODELS:
        click = result["models"][name]["ALL"]["click"]
        assert 0 <= click["auc"]["mean"] <= 1 and click["rows"] > 0 and click["positives"] > 0, name
    # The options reached the pipeline: SAMD trained (so was scored on) one scenario's rows.
    assert set(result["models"]["samd"]) == {"ALL", SAMD_SCENARIO}
    for name, paired in result["paired_click_vs_floor_on_all"]["auc"].items():
        (seed0,) = paired["per_seed"]
        assert seed0["low"] <= seed0["diff"] <= seed0["high"] and seed0["rows"] > 0, name
        side = "above" if seed0["low"] > 0 else "below" if seed0["high"] < 0 else None
        assert paired["verdict"] == (f"{side} logistic_regression" if side else
                                     "no difference (an interval contains 0)"), name
    assert set(result["paired_vs_baselines"]["adl"]) == MODELS - {"adl"}
    assert set(result["budget"]) == MODELS
    # Each model's learning curve (per epoch, train and validation) is in the table.
    for name in MODELS - {"samd"}:
        (curve,) = [b["history"] for b in result["budget"][name]]
        assert len(curve["loss"]) == len(curve["val_auc_click"]) == result["budget"][name][0]["epochs"], name


def test_summarise_only_rebuilds_the_same_table_from_the_run(bench_run, tmp_path):
    from bench import quality

    output = tmp_path / "quality.json"
    assert quality.main(["--summarise-only", "--seeds", "0", "--workdir", bench_run["workdir"],
                         "--baselines", "adl", "--output", str(output)]) == 0
    again, first = _read(output), _read(bench_run["quality"])
    assert again["models"] == first["models"]
    assert again["paired_vs_baselines"] == first["paired_vs_baselines"]
    # A seed's wall time survives into a later merge (one seed per invocation, across sessions).
    assert again["seconds"]["seed0"] == first["seconds"]["seed0"] > 0
    assert again["budget"] == first["budget"]
