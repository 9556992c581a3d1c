"""The run console (pipelines/console.py) on its own: fast, no pipeline run.

The console of a real run is checked in test_pipeline_e2e.py, on the module's run.
"""

import io
import json
import logging
import os
import subprocess
import sys
import time

from ml_metadata.proto import metadata_store_pb2

from pipelines import console as C

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_quiet_sends_fd_level_output_and_child_processes_to_the_log_and_keeps_the_terminal(tmp_path):
    # In a fresh interpreter: the test process's own fds stay as pytest set them.
    script = f"""
import os, subprocess, sys, warnings
sys.path.insert(0, {REPO!r})
from pipelines.console import quiet
with quiet() as log:
    os.write(2, b"import noise, before the log's place is known\\n")
    log.open({str(tmp_path)!r}, "run")
    os.write(2, b"C++ noise on fd 2\\n")
    os.write(1, b"noise on fd 1\\n")
    print("print noise")
    warnings.warn("a library's warning", FutureWarning)
    subprocess.run([sys.executable, "-c", "import os; os.write(2, b'worker noise\\\\n')"], check=True)
    log.terminal.write("console line\\n")
print("after: " + log.path, file=sys.stderr)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    log = os.path.join(str(tmp_path), "run.log")
    assert out.stdout == ""
    assert out.stderr == f"console line\nafter: {log}\n"
    with open(log) as f:
        logged = f.read()
    for noise in ("import noise", "C++ noise on fd 2", "noise on fd 1", "print noise", "FutureWarning", "worker noise"):
        assert noise in logged, noise


def test_quiet_never_overwrites_an_earlier_log(tmp_path):
    script = f"""
import sys
sys.path.insert(0, {REPO!r})
from pipelines.console import quiet
for _ in range(2):
    with quiet() as log:
        log.open({str(tmp_path)!r}, "same-second")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert sorted(os.listdir(str(tmp_path))) == ["same-second-2.log", "same-second.log"]


def test_verbose_leaves_the_output_alone(tmp_path):
    with C.quiet(verbose=True) as log:
        log.open(str(tmp_path), "run")
        assert log.terminal is sys.stderr and log.path is None
    assert os.listdir(str(tmp_path)) == []


def test_verbose_from_the_flag_or_the_environment(monkeypatch):
    monkeypatch.delenv(C.VERBOSE_ENV, raising=False)
    assert not C.verbose_requested([])
    assert C.verbose_requested(["--verbose"])
    for value, verbose in (("1", True), ("yes", True), ("0", False), ("", False), ("false", False)):
        monkeypatch.setenv(C.VERBOSE_ENV, value)
        assert C.verbose_requested([]) is verbose, value


def _console(tmp_path, components, progress_seconds=60.0):
    out = io.StringIO()
    console = C.RunConsole(out, str(tmp_path / "run.log"), "20260101-000000", str(tmp_path / "metadata.sqlite"),
                           str(tmp_path), components, progress_seconds=progress_seconds)
    return console, out


def test_console_follows_the_runners_log_records_and_ends_with_the_summary(tmp_path):
    console, out = _console(tmp_path, ["ExampleGen", "Trainer"])
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.INFO)
    try:
        with console:
            absl.info("Component %s is running.", "ExampleGen")
            absl.info("unrelated: Component Trainer is running.")
            absl.info("Component %s is finished.", "ExampleGen")
            absl.info("Component %s is running.", "Trainer")
            absl.info("Component %s is finished.", "Trainer")
        absl.info("Component %s is running.", "Trainer")  # after the run: not the console's
    finally:
        absl.setLevel(level)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("keep_samd: run 20260101-000000, 2 components; log: ")
    assert [line.split()[:3] for line in lines[1:5]] == [
        ["[1/2]", "ExampleGen", "started"], ["[1/2]", "ExampleGen", "done"],
        ["[2/2]", "Trainer", "started"], ["[2/2]", "Trainer", "done"]]
    assert lines[5].startswith("keep_samd: run finished in ")
    assert lines[-1] == f"  log: {tmp_path / 'run.log'}"


def test_console_says_which_component_failed(tmp_path):
    console, out = _console(tmp_path, ["ExampleGen", "Trainer"])
    try:
        with console:
            console.started("Trainer")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    last = out.getvalue().splitlines()[-1]
    assert last.startswith("[2/2] Trainer") and "FAILED after" in last and str(tmp_path / "run.log") in last
    assert "run finished" not in out.getvalue()


def test_a_long_step_gets_a_progress_line_per_interval(tmp_path):
    console, out = _console(tmp_path, ["Transform"], progress_seconds=0.3)
    with console:
        console.started("Transform")
        time.sleep(1.1)
        console.finished("Transform")
        time.sleep(0.7)  # between components: nothing to report
    progress = [line for line in out.getvalue().splitlines() if " so far " in line]
    assert 2 <= len(progress) <= 4, out.getvalue()
    assert all(line.startswith("[1/1] Transform") for line in progress)


def _artifact(uri, **properties):
    a = metadata_store_pb2.Artifact(uri=str(uri))
    for name, value in properties.items():
        if isinstance(value, int):
            a.custom_properties[name].int_value = value
        else:
            a.custom_properties[name].string_value = value
    return a


def _write(path, doc):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f)


FLOOR_REASON = ("auc_click 0.550 is below the floor logistic_regression 0.600 on the same 812 rows: "
                "difference -0.050 [-0.080, -0.020] (paired 95%)")


def test_key_figures_feed_the_summary_table(tmp_path):
    console, out = _console(tmp_path, ["KeepEvaluator", "SamdEvaluator", "KeepPusher", "SamdPusher", "MmoePusher"])
    keep = tmp_path / "keep_eval"
    _write(str(keep / "evaluation.json"), {
        "metrics": {"ALL": {"click": {"auc": 0.71234}}},
        "blessings": {"keep_general": {"blessed": True, "slice": "ALL"}}})
    samd = tmp_path / "samd_eval"
    _write(str(samd / "evaluation.json"), {
        "metrics": {"banner": {"click": {"auc": 0.6}}, "home_feed": {"click": {"auc": 0.55}}},
        "blessings": {"samd_banner": {"blessed": True, "slice": "banner"},
                      "samd_home_feed": {"blessed": False, "slice": "home_feed", "reason": FLOOR_REASON}}})
    mmoe = tmp_path / "mmoe_eval"
    _write(str(mmoe / "evaluation.json"), {
        "metrics": {"ALL": {"click": {"auc": 0.43}}},
        "blessings": {"mmoe": {"blessed": False, "slice": "ALL", "reason": "auc_click 0.4300 does not beat chance"}}})
    assert C._figure(console, "evaluation", _artifact(keep)) == "test click AUC 0.712, blessed"
    assert C._figure(console, "evaluation", _artifact(samd)) == \
        "2 models, test click AUC 0.550-0.600, 1/2 blessed (not: samd_home_feed)"
    assert C._figure(console, "evaluation", _artifact(mmoe)) == \
        "test click AUC 0.430, NOT blessed: auc_click 0.4300 does not beat chance"
    pushed = _artifact(tmp_path / "push", pushed=1, pushed_version="17",
                       pushed_destination=str(tmp_path / "serving" / "keep_general" / "17"))
    assert C._figure(console, "pushed_model", pushed) == "pushed keep_general version 17"
    _write(str(tmp_path / "samd_push" / "pushed.json"), {"samd_banner": str(tmp_path / "serving" / "samd_banner" / "18")})
    assert C._figure(console, "pushed_model", _artifact(tmp_path / "samd_push", pushed=1)) == \
        "pushed samd_banner version 18"
    assert C._figure(console, "pushed_model", _artifact(tmp_path / "mmoe_push", pushed=0)) == "not pushed (not blessed)"
    _write(str(tmp_path / "run" / "history.json"), {"history": {"val_auc_click": [0.6, 0.65, 0.64]}})
    assert C._figure(console, "model_run", _artifact(tmp_path / "run")) == \
        "validation click AUC 0.650 (best of 3 epochs)"

    summary = console.summary()
    rows = {line.split()[0]: line.split()[1:] for line in summary[3:] if line.startswith("  samd_")
            or line.startswith("  keep_") or line.startswith("  mmoe")}
    assert rows == {"keep_general": ["0.712", "yes", "17"], "samd_banner": ["0.600", "yes", "18"],
                    "samd_home_feed": ["0.550", "no", "not", "pushed"], "mmoe": ["0.430", "no", "not", "pushed"]}
    # Under the table, each refused model with its reason.
    refused = summary[summary.index("  not blessed:") + 1:]
    assert refused[:2] == [f"    samd_home_feed: {FLOOR_REASON}", "    mmoe: auc_click 0.4300 does not beat chance"]


def test_pipeline_create_is_recognised_as_compiling_only():
    from tfx.tools.cli.handler.local_dag_runner_patcher import LocalDagRunnerPatcher

    from pipelines import local_runner

    assert not local_runner._compiling()
    with LocalDagRunnerPatcher().patch():
        assert local_runner._compiling()
    assert not local_runner._compiling()


def test_trainers_without_a_model_run_show_what_their_training_record_says(tmp_path):
    console, _ = _console(tmp_path, ["SamdTrainer"])
    _write(str(tmp_path / "samd" / "training.json"), {"epochs": 2, "best_epoch": {"banner": 1}})
    assert C._figure(console, "model", _artifact(tmp_path / "samd")) == "2 epochs"
    _write(str(tmp_path / "down" / "training.json"), {
        "epochs": 2, "best_epoch": 2, "history": {"val_auc_click": [0.61, 0.63]},
        "warm_start": {"base_model": "/runs/.../model/18", "restored": 12}})
    assert C._figure(console, "model", _artifact(tmp_path / "down")) == \
        "validation click AUC 0.630 (best of 2 epochs); warm-started (12 variables restored)"


def test_a_tuner_shows_its_best_trial(tmp_path):
    console, _ = _console(tmp_path, ["MmoeTuner"])
    _write(str(tmp_path / "results" / "tuner_results.json"), [
        {"trial_id": "0", "score": 0.61, "learning_rate": 0.001, "num_experts": 4},
        {"trial_id": "1", "score": 0.6351, "learning_rate": 0.0003172, "num_experts": 8}])
    assert C._figure(console, "tuner_results", _artifact(tmp_path / "results")) == \
        "validation click AUC 0.635 (best of 2 trials: learning_rate=0.000317, num_experts=8)"


def test_a_cached_step_says_so(tmp_path):
    console, out = _console(tmp_path, ["Transform", "Trainer"])
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.INFO)
    console.outputs = lambda execution_id: {}  # no ML Metadata here
    try:
        with console:
            for node, record in (("Transform", "A cached execution %d is used."),
                                 ("Trainer", "Going to run a new execution %d")):
                absl.info("Component %s is running.", node)
                absl.info(record, 7)
                absl.info("Component %s is finished.", node)
    finally:
        absl.setLevel(level)
    done = [line for line in out.getvalue().splitlines() if " done in " in line]
    assert done[0].startswith("[1/2] Transform") and done[0].endswith("(cached)")
    assert done[1].startswith("[2/2] Trainer") and "cached" not in done[1]
