"""The real keep_samd pipeline, run the way users run it (`tfx pipeline create` + `tfx run create`).

Slow (minutes): it runs ExampleGen, StatisticsGen, ExampleValidator and Transform on
Beam, trains KEEP and pushes it, on a small generated data set.
"""

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

from synthetic import generate as G
from tests.csv_edit import set_cell as _set_cell

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
REPORTS = os.path.join(REPO, "runs", "test-reports")


def _env(tmp, data, **extra):
    env = dict(os.environ)
    env.update({
        "TF_USE_LEGACY_KERAS": "1",
        "KEEP_SAMD_OUTPUT": os.path.join(tmp, "runs"),
        "KEEP_SAMD_DATA": data,
        "LOCAL_HOME": os.path.join(tmp, "tfx_local"),
        "KEEP_SAMD_TRAIN_STEPS": "600",
        "KEEP_SAMD_EVAL_STEPS": "10",
        "KEEP_SAMD_EPOCHS": "3",
        "KEEP_SAMD_KEEP": json.dumps({"batch_size": 256}),
    })
    env.update(extra)
    return env


def _run(cmd, env, timeout=1500):
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("e2e"))
    data = os.path.join(tmp, "data")
    G.generate(data, G.GeneratorConfig(rows=16_000, days=2, seed=5), progress=False)
    env = _env(tmp, data)
    create = _run([os.path.join(BIN, "tfx"), "pipeline", "create", "--pipeline_path=pipelines/local_runner.py",
                   "--engine=local"], env)
    assert create.returncode == 0, create.stdout[-3000:] + create.stderr[-3000:]
    run = _run([os.path.join(BIN, "tfx"), "run", "create", "--pipeline_name=keep_samd", "--engine=local"], env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return tmp, run


def test_pipeline_pushes_a_servable_keep_model(pipeline_run):
    tmp, _ = pipeline_run
    versions = glob.glob(os.path.join(tmp, "runs", "serving", "keep_general", "*", "saved_model.pb"))
    assert len(versions) == 1
    # Root, metadata and pushed models live under the output folder, none in the source tree.
    assert os.path.exists(os.path.join(tmp, "runs", "metadata", "keep_samd", "metadata.sqlite"))
    assert os.path.isdir(os.path.join(tmp, "runs", "pipelines", "keep_samd", "Transform"))
    # The push also wrote TF Serving's models.config, and the export carries warm-up requests.
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2
    with open(os.path.join(tmp, "runs", "serving", "models.config")) as f:
        config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    assert [(c.name, c.base_path) for c in config.model_config_list.config] == [
        ("keep_general", os.path.join(tmp, "runs", "serving", "keep_general"))]
    version_dir = os.path.dirname(versions[0])
    assert os.path.getsize(os.path.join(version_dir, "assets.extra", "tf_serving_warmup_requests")) > 0


def test_pushed_model_predicts_in_a_fresh_process_that_imports_nothing_from_the_repo(pipeline_run):
    tmp, _ = pipeline_run
    model = os.path.dirname(glob.glob(os.path.join(tmp, "runs", "serving", "keep_general", "*", "saved_model.pb"))[0])
    examples = os.path.join(tmp, "runs", "pipelines", "keep_samd", "CsvExampleGen", "examples", "*", "Split-eval", "*")
    script = os.path.join(tmp, "standalone_predict.py")
    shutil.copy(os.path.join(REPO, "tests", "standalone_predict.py"), script)
    packages = [os.path.join(REPO, p) for p in ("schemas", "synthetic", "components", "models", "pipelines", "serving")]
    out = subprocess.run([sys.executable, "-I", script, model, examples, "--forbid-imports-from", *packages],
                         cwd=tmp, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["modules_from_forbidden_folder"] == []
    assert report["knowledge_width"] == 48 + 3 * 16 + 3 * 64
    overall = report["scenarios"]["ALL"]
    os.makedirs(REPORTS, exist_ok=True)
    with open(os.path.join(REPORTS, "keep_e2e.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(f"\nKEEP eval click AUC {overall['click']['auc']:.3f} (oracle {overall['click']['oracle_auc']:.3f}) "
          f"on {overall['rows']} rows; report in {REPORTS}/keep_e2e.json")
    assert overall["click"]["auc"] > 0.57, overall
    # Conversion and cart towers learn too, and predictions are calibrated to the base rate.
    assert overall["conversion"]["auc"] > 0.52 and overall["cart"]["auc"] > 0.52, overall
    assert abs(overall["click"]["mean_prediction"] - overall["click"]["mean_label"]) < 0.1


def _small_data(tmp, rows=2500):
    data = os.path.join(tmp, "data")
    G.generate(data, G.GeneratorConfig(rows=rows, days=2, seed=9), progress=False)
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
