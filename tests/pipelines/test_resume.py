"""A killed run resumes from TFX's cache, and a change reruns exactly what depends on it.

The fewest components that prove the cache path (the data steps, Transform, KEEP, its
evaluator and pusher, the report: no SAMD, no unified models, no stage two), on tiny data,
with Beam in one process; four runs on one output folder, each read back from ML Metadata:
1. killed (SIGKILL to its process group) once Transform has finished;
2. started again: the data steps and Transform are reused (cached), KEEP, which the kill
   stopped, runs;
3. one blessing option changed: KEEP is reused, its evaluator, pusher and the report run;
4. one CSV cell changed: the raw-data check, ExampleGen and everything after run again.
The multi-process DirectRunner and the other trainers run in tests/pipelines/test_pipeline_e2e.py.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from synthetic import generate as G
from tests.csv_edit import set_cell

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPLETE, CACHED = "COMPLETE", "CACHED"
DATA_STEPS = ("RawDataCheck", "CsvExampleGen", "StatisticsGen", "ExampleValidator", "ValidationGate")


def _env(tmp, margin):
    env = dict(os.environ)
    env.update({
        "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
        "KEEP_SAMD_OUTPUT": os.path.join(tmp, "runs"), "KEEP_SAMD_DATA": os.path.join(tmp, "data"),
        "KEEP_SAMD_BEAM_ARGS": "--runner=DirectRunner --direct_running_mode=in_memory",
        "KEEP_SAMD_TRAIN_STEPS": "10", "KEEP_SAMD_EVAL_STEPS": "2", "KEEP_SAMD_EPOCHS": "1",
        "KEEP_SAMD_KEEP": json.dumps({"batch_size": 64}),
        "KEEP_SAMD_SAMD": json.dumps({"enabled": False}),
        "KEEP_SAMD_UNIFIED": json.dumps({"models": []}),
        "KEEP_SAMD_DOWNSTREAM": json.dumps({"enabled": False}),
        "KEEP_SAMD_BLESSING": json.dumps({"margin": margin}),  # below chance: any model is blessed
    })
    return env


def executions(metadata_path):
    """{node id: [state of each of its executions, oldest first]} from ML Metadata."""
    from ml_metadata.proto import metadata_store_pb2

    from pipelines.console import node_executions

    return {node: [metadata_store_pb2.Execution.State.Name(e.last_known_state) for e in runs]
            for node, runs in node_executions(metadata_path).items()}


def _start(tmp, margin=-1.0):
    return subprocess.Popen([sys.executable, "pipelines/local_runner.py"], cwd=REPO, env=_env(tmp, margin),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _finish(proc, timeout=1200):
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"the run did not end within {timeout} s")
    assert proc.returncode == 0, err[-5000:]


def _new_states(before, after):
    """{node: states of the executions `after` has that `before` had not}."""
    return {node: states[len(before.get(node, [])):] for node, states in after.items()}


def test_a_killed_run_resumes_and_a_change_reruns_what_depends_on_it(tmp_path):
    tmp = str(tmp_path)
    G.generate(os.path.join(tmp, "data"), G.GeneratorConfig(rows=1500, days=3, seed=5), progress=False)
    metadata = os.path.join(tmp, "runs", "metadata", "keep_samd", "metadata.sqlite")

    # 1. Killed once Transform has finished (every wait has a deadline).
    proc = _start(tmp)
    deadline = time.time() + 900
    while True:
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-3000:]}"
        assert time.time() < deadline, "Transform did not finish within 900 s"
        if os.path.exists(metadata) and COMPLETE in executions(metadata).get("Transform", []):
            break
        time.sleep(1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    first = executions(metadata)
    assert first["Transform"] == [COMPLETE] and COMPLETE not in first.get("KeepTrainer", [])

    # 2. Started again: Transform and the data steps are not executed again.
    _finish(_start(tmp))
    second = executions(metadata)
    new = _new_states(first, second)
    for node in DATA_STEPS + ("Transform",):
        assert new[node] == [CACHED], (node, new[node])
    for node in ("KeepTrainer", "KeepEvaluator", "KeepPusher", "EvaluationReport"):
        assert new[node] == [COMPLETE], (node, new[node])

    # 3. A blessing option changed: what depends on it runs again, KEEP and everything before it do not.
    _finish(_start(tmp, margin=-0.5))
    third = executions(metadata)
    new = _new_states(second, third)
    for node in DATA_STEPS + ("Transform", "KeepTrainer"):
        assert new[node] == [CACHED], (node, new[node])
    for node in ("KeepEvaluator", "KeepPusher", "EvaluationReport"):
        assert new[node] == [COMPLETE], (node, new[node])

    # 4. One CSV cell changed: the check, ExampleGen and everything after it run again.
    day0 = os.path.join(tmp, "data", "day=0")
    set_cell(os.path.join(day0, sorted(os.listdir(day0))[0]), 2, "item_price", "1.5")
    _finish(_start(tmp, margin=-0.5))
    new = _new_states(third, executions(metadata))
    for node in DATA_STEPS + ("Transform", "KeepTrainer", "KeepEvaluator", "KeepPusher", "EvaluationReport"):
        assert new[node] == [COMPLETE], (node, new[node])
