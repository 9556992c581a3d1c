import json
import os

import numpy as np
import pytest

from tests.bench.conftest import SAMD_SCENARIO

pytestmark = pytest.mark.slow


def test_samd_bench_trains_scores_and_pairs_a_variant_against_keep(bench_run, tmp_path):
    from bench import samd

    output, workdir = tmp_path / "samd.json", tmp_path / "work"
    samd.main(["--run", bench_run["run"], "--data", bench_run["data"],
               "--transform", os.path.join(bench_run["base"], "transform"), "--seeds", "0", "--variants", "samd",
               "--steps", "1", "--epochs", "1", "--eval-steps", "1", "--scenarios", SAMD_SCENARIO,
               "--workdir", str(workdir), "--output", str(output)])
    got = json.loads(output.read_text())
    assert list(got["roles"]) == [SAMD_SCENARIO] and got["variants"] == {"samd": {}}

    predictions = np.load(workdir / "samd_s0" / "predictions.npy")
    assert len(predictions) > 0 and np.all((predictions >= 0) & (predictions <= 1))
    # The run's KEEP models are scored on the same rows beside the student.
    assert set(got["auc"]) == {"samd", "keep_general", "keep_downstream"}
    for name, per in got["auc"].items():
        assert 0 <= per[SAMD_SCENARIO]["mean"] <= 1, name
    for base in ("keep_general", "keep_downstream"):
        (seed0,) = got["paired"]["samd"][base]
        low_high = seed0["scenarios"][SAMD_SCENARIO]
        assert seed0["seed"] == 0 and low_high[1] <= low_high[0] <= low_high[2], base
    (transfer,) = got["transfer"]["samd"]
    assert transfer["seed"] == 0 and transfer["best_epochs"] and transfer["batch_sizes"]
