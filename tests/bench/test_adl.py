"""bench.adl's three subcommands; timings are never compared (machine and load), only reported."""

import json
import os
import subprocess
import sys

import pytest

from tests.bench.conftest import transform_base
from tests.pipelines import REPO

pytestmark = pytest.mark.slow


def _result(out):
    """The JSON a subcommand prints last (after its progress lines)."""
    return json.loads(out[out.rfind("\n{\n") + 1:])


def test_speed_times_every_model_against_the_shared_bottom():
    # Its own process: speed sets TensorFlow's thread counts, which only a fresh runtime accepts.
    args = ["speed", "--clusters", "2", "--batch", "8", "--steps", "2", "--warmup", "1", "--repeats", "1",
            "--bottom-units", "8", "4", "--tower-units", "4", "--decompose", "--star-scenarios", "3"]
    run = subprocess.run([sys.executable, "-m", "bench.adl", *args], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "TF_USE_LEGACY_KERAS": "1"}, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    got = _result(run.stdout)
    assert set(got["models"]) == {"shared_bottom", "mmoe", "adl_k2", "adl_k2_no_routing",
                                  "adl_k1_no_routing_no_partition", "star_m3"}
    assert got["bottom_units"] == [8, 4] and got["tower_units"] == [4] and got["threads"] == 1
    for name, row in got["models"].items():
        assert row["steps_per_second"] > 0 and len(row["runs"]) == 1, name
    assert got["models"]["shared_bottom"]["vs_shared_bottom"] == 1.0


def test_pipeline_speed_trains_each_model_on_a_finished_transform(transformed, tmp_path, capsys):
    from bench import adl

    base = transform_base(transformed, tmp_path)
    assert adl.main(["pipeline-speed", "--base", base, "--models", "shared_bottom", "adl", "--steps", "1",
                     "--repeats", "2"]) == 0
    got = _result(capsys.readouterr().out)
    assert set(got["models"]) == {"shared_bottom", "adl"} and got["repeats"] == 2
    for name, row in got["models"].items():
        assert row["examples_per_second"] > 0 and len(row["runs"]) == 2, name
        low, high = row["paired_ratio"]["ci95"]
        assert low <= row["paired_ratio"]["mean"] <= high, name
    assert got["models"]["shared_bottom"]["paired_ratio"]["mean"] == 1.0


def test_sweep_k_reads_adls_auc_from_the_quality_run_it_starts(bench_run, tmp_path, capsys, monkeypatch):
    from tfx import v1 as tfx

    from bench import adl, quality

    commands = []

    # Each K's bench.quality run, in this process and with the shared run's training: the
    # command is parsed and its options validated by quality's main, the DAG run skipped.
    def run(cmd, check):
        assert cmd[:3] == [sys.executable, "-m", "bench.quality"] and check
        commands.append(cmd)
        args = cmd[3:]
        workdir = args[args.index("--workdir") + 1]
        os.makedirs(workdir)
        os.symlink(bench_run["run"], os.path.join(workdir, "seed0"))
        assert quality.main(args) == 0
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(tfx.orchestration.LocalDagRunner, "run", lambda self, pipeline: None)
    assert adl.main(["sweep-k", "--clusters", "2", "--seed", "0", "--base", bench_run["base"],
                     "--workdir", str(tmp_path)]) == 0
    got = _result(capsys.readouterr().out)
    (cmd,) = commands
    assert json.loads(cmd[cmd.index("--options") + 1]) == {"unified": {"configs": {"adl": {"num_clusters": 2}}}}
    with open(bench_run["quality"]) as f:
        shared = json.load(f)
    assert got == {"seed": 0, "click_auc_all": {"2": shared["models"]["adl"]["ALL"]["click"]["auc"]["mean"]}}
