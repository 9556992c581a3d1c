"""Runs that stop: a planted anomaly, a bad raw file, a missing data folder, each named in the error.

Each test runs the pipeline on its own small data (`python pipelines/local_runner.py`, as
`tfx run create` does); the shared end-to-end run is in test_pipeline_e2e.py.
"""

import os
import sys

import pytest

from synthetic import generate as G
from tests.csv_edit import set_cell as _set_cell
from tests.pipelines import pipeline_env as _env, run_command as _run

pytestmark = pytest.mark.e2e


def _small_data(tmp, rows=2500):
    data = os.path.join(tmp, "data")
    G.generate(data, G.GeneratorConfig(rows=rows, days=3, seed=9), progress=False)
    return data


def test_planted_anomaly_stops_the_run_before_training(tmp_path):
    tmp = str(tmp_path)
    data = _small_data(tmp)
    # Passes the raw-data check (an integer), breaks the schema's domain (0..6).
    _set_cell(os.path.join(data, "day=1", "part-00000.csv"), 10, "user_age_bucket", "12")
    run = _run([sys.executable, "pipelines/local_runner.py"], _env(tmp, data))
    assert run.returncode == 1, run.stderr[-3000:]
    assert "keep_samd: run stopped" in run.stderr
    assert "user_age_bucket" in run.stderr.split("keep_samd: run stopped")[-1]
    root = os.path.join(tmp, "runs", "pipelines", "keep_samd")
    assert os.path.isdir(os.path.join(root, "ExampleValidator"))
    assert not os.path.exists(os.path.join(root, "Transform"))
    assert not os.path.exists(os.path.join(tmp, "runs", "serving"))


def test_bad_raw_file_stops_the_run_before_example_gen_naming_file_and_line(tmp_path):
    tmp = str(tmp_path)
    data = _small_data(tmp, rows=1500)
    _set_cell(os.path.join(data, "day=0", "part-00000.csv"), 42, "scenario_id", "moon_page")
    run = _run([sys.executable, "pipelines/local_runner.py"], _env(tmp, data))
    assert run.returncode == 1
    message = run.stderr.split("keep_samd: run stopped: ")[-1]
    assert "day=0/part-00000.csv, line 42: unknown scenario 'moon_page'" in message
    assert not os.path.exists(os.path.join(tmp, "runs", "pipelines", "keep_samd", "CsvExampleGen"))
    assert not os.path.exists(os.path.join(tmp, "runs", "serving"))


def test_missing_data_folder_is_named(tmp_path):
    run = _run([sys.executable, "pipelines/local_runner.py"], _env(str(tmp_path), str(tmp_path / "no_such_data")))
    assert run.returncode == 1
    assert "no_such_data: data folder does not exist" in run.stderr
    assert "Traceback" not in run.stderr
