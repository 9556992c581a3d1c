"""A killed run resumes from TFX's cache, and a change reruns exactly what depends on it.

One small pipeline (KEEP and SAMD only), three runs on one output folder, each read
back from ML Metadata:
1. killed (SIGKILL to its process group) once Transform has finished;
2. started again with one SAMD option changed: the data steps and Transform are reused
   (cached), KEEP, which the kill stopped, and SAMD run;
3. one CSV cell changed: the raw-data check, ExampleGen and everything after run again.
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


def _env(tmp, samd_entropy):
    env = dict(os.environ)
    env.update({
        "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
        "KEEP_SAMD_OUTPUT": os.path.join(tmp, "runs"), "KEEP_SAMD_DATA": os.path.join(tmp, "data"),
        "KEEP_SAMD_TRAIN_STEPS": "20", "KEEP_SAMD_EVAL_STEPS": "2", "KEEP_SAMD_EPOCHS": "1",
        "KEEP_SAMD_KEEP": json.dumps({"batch_size": 128}),
        "KEEP_SAMD_SAMD": json.dumps({"train_steps": 10, "epochs": 1,
                                      "samd": {"batch_size": 64, "transfer_entropy": samd_entropy}}),
        "KEEP_SAMD_UNIFIED": json.dumps({"models": []}),
        "KEEP_SAMD_DOWNSTREAM": json.dumps({"enabled": False}),
        "KEEP_SAMD_BLESSING": json.dumps({"margin": -1.0}),
    })
    return env


def executions(metadata_path):
    """{node id: [state of each of its executions, oldest first]} from ML Metadata."""
    from ml_metadata.proto import metadata_store_pb2

    from pipelines.console import node_executions

    return {node: [metadata_store_pb2.Execution.State.Name(e.last_known_state) for e in runs]
            for node, runs in node_executions(metadata_path).items()}


def _start(tmp, entropy):
    return subprocess.Popen([sys.executable, "pipelines/local_runner.py"], cwd=REPO, env=_env(tmp, entropy),
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
    G.generate(os.path.join(tmp, "data"), G.GeneratorConfig(rows=3000, days=4, seed=5), progress=False)
    metadata = os.path.join(tmp, "runs", "metadata", "keep_samd", "metadata.sqlite")

    # 1. Killed once Transform has finished (every wait has a deadline).
    proc = _start(tmp, 0.1)
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
    assert first["Transform"] == [COMPLETE] and COMPLETE not in first.get("SamdTrainer", [])

    # 2. Started again, one SAMD option changed: Transform and the data steps are not executed again.
    _finish(_start(tmp, 0.05))
    second = executions(metadata)
    new = _new_states(first, second)
    for node in DATA_STEPS + ("Transform",):
        assert new[node] == [CACHED], (node, new[node])
    assert new["KeepTrainer"] == [COMPLETE] and new["SamdTrainer"] == [COMPLETE]
    assert new["EvaluationReport"] == [COMPLETE]

    # 3. One CSV cell changed: the check, ExampleGen and everything after it run again.
    day0 = os.path.join(tmp, "data", "day=0")
    set_cell(os.path.join(day0, sorted(os.listdir(day0))[0]), 2, "item_price", "1.5")
    _finish(_start(tmp, 0.05))
    new = _new_states(second, executions(metadata))
    for node in DATA_STEPS + ("Transform", "KeepTrainer", "ScenarioSimilarity", "SamdTrainer", "KeepEvaluator"):
        assert new[node] == [COMPLETE], (node, new[node])
