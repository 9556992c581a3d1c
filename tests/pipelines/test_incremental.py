"""Incremental runs: a second run over a new daily span adds a knowledge-cache version and warm-starts
the downstream model from the first run's."""

import glob
import json
import os
import sys

import pytest

from synthetic import generate as G
from tests.pipelines import failure_text as _failed, pipeline_env as _env, read_json as _read_json, run_command as _run

pytestmark = pytest.mark.e2e


def _add_day(data, source_day, new_day):
    """A new daily span: the rows of `source_day` again, as day `new_day`."""
    import csv

    os.makedirs(os.path.join(data, f"day={new_day}"))
    with open(os.path.join(data, f"day={source_day}", "part-00000.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    with open(os.path.join(data, f"day={new_day}", "part-00000.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "day": str(new_day)})
    return len(rows)


def test_second_run_with_a_new_span_adds_a_knowledge_version_and_warm_starts_the_downstream_model(tmp_path):
    tmp = str(tmp_path)
    data = os.path.join(tmp, "data")
    G.generate(data, G.GeneratorConfig(rows=6000, days=4, seed=5), progress=False)
    # Two runs of their own of what this test is about: KEEP, the knowledge cache, the
    # downstream model. Any downstream model is blessed (a margin of -1 over chance): what is
    # tested is that the second run warm-starts from the first one's.
    # Beam in one process: on this little data, starting multi-processing workers costs more than it saves.
    env = _env(tmp, data, KEEP_SAMD_TRAIN_STEPS="60", KEEP_SAMD_EPOCHS="1",
               KEEP_SAMD_BEAM_ARGS="--runner=DirectRunner --direct_running_mode=in_memory",
               KEEP_SAMD_SAMD=json.dumps({"enabled": False}), KEEP_SAMD_UNIFIED=json.dumps({"models": []}),
               KEEP_SAMD_BLESSING=json.dumps({"metric": "auc_click", "models": {
                   "keep_downstream": {"margin": -1.0, "tolerance": 1.0}}}),
               KEEP_SAMD_DOWNSTREAM=json.dumps({"spans": 1, "train_steps": 60, "knowledge_train_steps": 60,
                                                "epochs": 1, "downstream": {"batch_size": 256},
                                                "knowledge": {"batch_size": 256}}))
    runner = [sys.executable, "pipelines/local_runner.py"]
    run = _run(runner, env)
    assert run.returncode == 0, _failed(tmp, run)
    serving = os.path.join(tmp, "runs", "serving")
    first_cache = sorted(os.listdir(os.path.join(serving, "keep_knowledge")))
    first_model = glob.glob(os.path.join(tmp, "runs", "pipelines", "keep_samd", "DownstreamTrainer", "model", "*"))
    assert len(first_cache) == 1 and len(first_model) == 1, (first_cache, first_model)

    _add_day(data, 3, 4)  # day 4 becomes the test day, 3 validation, 0-2 train
    run = _run(runner, env)
    assert run.returncode == 0, _failed(tmp, run)

    caches = sorted(os.listdir(os.path.join(serving, "keep_knowledge")), key=int)
    assert len(caches) == 2 and caches[0] == first_cache[0]
    models = glob.glob(os.path.join(tmp, "runs", "pipelines", "keep_samd", "DownstreamTrainer", "model", "*"))
    second = [m for m in models if m not in first_model]
    assert len(second) == 1, models
    record = _read_json(os.path.join(second[0], "training.json"))
    assert record["warm_start"]["base_model"] == first_model[0]
    assert record["warm_start"]["restored"] > 0 and record["warm_start"]["new"] == []
    assert "user_id" in record["warm_start"]["remapped"]  # a day more of train: new users, reordered ids
    assert record["latest_day"] == 2 and record["knowledge_version"] == int(caches[1])
    first = _read_json(os.path.join(first_model[0], "training.json"))
    assert first["warm_start"]["base_model"] is None and first["latest_day"] == 1
