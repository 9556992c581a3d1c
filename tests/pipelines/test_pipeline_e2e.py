"""The real keep_samd pipeline, run the way users run it (`tfx pipeline create` + `tfx run create`).

Slow (minutes): it runs ExampleGen, StatisticsGen, ExampleValidator and Transform on
Beam, trains KEEP and pushes it, on a small generated data set.
"""

import contextlib
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
PLANTED = "mmoe"


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
        "KEEP_SAMD_SAMD": json.dumps({"train_steps": 200, "epochs": 2, "samd": {"batch_size": 64}}),
        # mmoe is the planted worse model: trained on inverted labels, it must not be blessed.
        # (Shuffled labels give an AUC near 0.5 but, with early stopping on validation AUC,
        # 0.52-0.54 at times here: a flaky control.)
        "KEEP_SAMD_UNIFIED": json.dumps({"train_steps": 150, "corrupt_labels": {PLANTED: "invert"}}),
        # A margin of 3 standard errors of a chance AUC on the ~4k test rows. The students are
        # judged on their own scenario's rows (~40 for a minor one here, too few for any
        # margin): they are only required to have a computable AUC.
        # The downstream model is evaluated on the sub-scenarios' ~2.4k test rows. Its
        # second (incremental) run may not beat the first: what is tested there is the
        # warm start, so any non-chance model is pushed.
        "KEEP_SAMD_BLESSING": json.dumps({"metric": "auc_click", "margin": 0.03, "models": {
            "samd": {"margin": -1.0}, "keep_downstream": {"tolerance": 1.0}}}),
        # KEEP stage two, incremental: the downstream model trains on the latest day.
        "KEEP_SAMD_DOWNSTREAM": json.dumps({"spans": 1, "train_steps": 150, "knowledge_train_steps": 150,
                                            "epochs": 2, "downstream": {"batch_size": 256},
                                            "knowledge": {"batch_size": 256}}),
    })
    env.update(extra)
    return env


def _run(cmd, env, timeout=1500):
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("e2e"))
    data = os.path.join(tmp, "data")
    # 4 days: the time split trains on days 0-1, validates on day 2 and tests on day 3.
    G.generate(data, G.GeneratorConfig(rows=16_000, days=4, seed=5), progress=False)
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
    listed = {c.name: c.base_path for c in config.model_config_list.config}
    assert listed["keep_general"] == os.path.join(tmp, "runs", "serving", "keep_general")
    pushed = {d for d in os.listdir(os.path.join(tmp, "runs", "serving"))
              if os.path.isdir(os.path.join(tmp, "runs", "serving", d))}
    assert set(listed) == pushed  # every pushed model, SAMD students and unified models included
    version_dir = os.path.dirname(versions[0])
    assert os.path.getsize(os.path.join(version_dir, "assets.extra", "tf_serving_warmup_requests")) > 0


def test_pushed_model_predicts_in_a_fresh_process_that_imports_nothing_from_the_repo(pipeline_run):
    tmp, _ = pipeline_run
    report = _standalone(tmp, _latest(tmp, "keep_general"))
    assert report["knowledge_width"] == 48 + 3 * 16 + 3 * 64
    overall = report["scenarios"]["ALL"]
    os.makedirs(REPORTS, exist_ok=True)
    with open(os.path.join(REPORTS, "keep_e2e.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(f"\nKEEP test click AUC {overall['click']['auc']:.3f} (oracle {overall['click']['oracle_auc']:.3f}) "
          f"on {overall['rows']} rows; report in {REPORTS}/keep_e2e.json")
    assert overall["click"]["auc"] > 0.57, overall
    # Conversion and cart towers learn too, and predictions are calibrated to the base rate.
    assert overall["conversion"]["auc"] > 0.52 and overall["cart"]["auc"] > 0.52, overall
    assert abs(overall["click"]["mean_prediction"] - overall["click"]["mean_label"]) < 0.1


def _standalone(tmp, model_dir):
    """tests/standalone_predict.py on the test split, in a fresh interpreter outside the repository."""
    examples = os.path.join(tmp, "runs", "pipelines", "keep_samd", "CsvExampleGen", "examples", "*", "Split-test", "*")
    script = os.path.join(tmp, "standalone_predict.py")
    shutil.copy(os.path.join(REPO, "tests", "standalone_predict.py"), script)
    packages = [os.path.join(REPO, p) for p in ("schemas", "synthetic", "components", "models", "pipelines", "serving")]
    out = subprocess.run([sys.executable, "-I", script, model_dir, examples, "--forbid-imports-from", *packages],
                         cwd=tmp, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["modules_from_forbidden_folder"] == []
    return report


def _latest(tmp, model):
    return os.path.dirname(sorted(glob.glob(os.path.join(tmp, "runs", "serving", model, "*", "saved_model.pb")))[-1])


def _dir_size(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def test_every_scenario_gets_a_standalone_samd_student(pipeline_run):
    tmp, _ = pipeline_run
    with open(os.path.join(tmp, "data", "scenarios.csv")) as f:
        scenarios = [line.split(",")[0] for line in f.read().split("\n")[1:] if line]
    teacher = _latest(tmp, "keep_general")
    for sid in scenarios:
        student = _latest(tmp, f"samd_{sid}")
        assert _dir_size(student) < 0.5 * _dir_size(teacher), sid
    report = _standalone(tmp, _latest(tmp, "samd_payment_page"))
    assert report["tasks"] == ["click", "conversion", "cart"]  # an MMoE student
    assert report["scenarios"]["payment_page"]["click"]["auc"] is not None
    forbidden = ("teacher", "meta", "representation", "cluster", "student_projections", "attention")
    assert not [v for v in report["variables"] if any(f in v for f in forbidden)], report["variables"]
    assert any("pay_channel" in v for v in report["variables"])  # its own heterogeneous feature
    transfer = glob.glob(os.path.join(tmp, "runs", "pipelines", "keep_samd", "SamdTrainer", "transfer_report", "*",
                                      "transfer.json"))
    with open(transfer[0]) as f:
        transfer = json.load(f)
    assert set(transfer["scenarios"]) == set(scenarios)
    w = transfer["scenarios"]["banner"]["transfer_weights"]
    # M_g rows; the student's layers plus the "no transfer" column (SamdConfig.null_transfer, on by default).
    assert len(w) == len(transfer["teacher_layers"]) and len(w[0]) == len(transfer["student_layers"]["banner"]) + 1


def test_every_unified_model_and_baseline_is_pushed_and_predicts_standalone(pipeline_run):
    from models.unified_trainer import MODELS

    tmp, _ = pipeline_run
    for name in MODELS:
        if name == PLANTED:  # not pushed (see below): its trained SavedModel still exports and predicts
            model = glob.glob(os.path.join(tmp, "runs", "pipelines", "keep_samd", "MmoeTrainer", "model", "*",
                                           "Format-Serving"))[0]
            report = _standalone(tmp, model)
            assert report["tasks"] == ["click", "conversion", "cart"]
            continue
        report = _standalone(tmp, _latest(tmp, name))
        assert report["tasks"] == ["click", "conversion", "cart"], name
        overall = report["scenarios"]["ALL"]
        assert overall["rows"] > 1000 and 0.0 < overall["click"]["mean_prediction"] < 1.0, name
        assert overall["click"]["auc"] > 0.5, (name, overall["click"])


def _evaluation(tmp, component):
    files = glob.glob(os.path.join(tmp, "runs", "pipelines", "keep_samd", component, "evaluation", "*",
                                   "evaluation.json"))
    assert len(files) == 1, component
    with open(files[0]) as f:
        return json.load(f)


def test_planted_worse_model_is_not_blessed_and_not_pushed(pipeline_run):
    tmp, run = pipeline_run
    planted = _evaluation(tmp, "MmoeEvaluator")
    verdict = planted["blessings"][PLANTED]
    assert not verdict["blessed"] and "does not beat chance" in verdict["reason"], verdict
    assert planted["metrics"]["ALL"]["click"]["auc"] < 0.5
    assert not os.path.exists(os.path.join(tmp, "runs", "serving", PLANTED))
    with open(os.path.join(tmp, "runs", "serving", "models.config")) as f:
        assert f'name: "{PLANTED}"' not in f.read()
    # Every other model was evaluated, blessed and pushed.
    for component, name in (("KeepEvaluator", "keep_general"), ("PepnetEvaluator", "pepnet"),
                            ("SharedBottomEvaluator", "shared_bottom")):
        record = _evaluation(tmp, component)
        assert record["blessings"][name]["blessed"], record["blessings"]
        assert os.path.isdir(os.path.join(tmp, "runs", "serving", name))
        assert set(record["metrics"]) == {"ALL", *record["roles"]}
        assert record["metrics"]["ALL"]["click"]["gauc"] is not None
    students = _evaluation(tmp, "SamdEvaluator")["blessings"]
    assert len(students) == 8 and all(b["blessed"] for b in students.values())
    # ADL routes a sample by the stored centres in training as in serving.
    adl = glob.glob(os.path.join(tmp, "runs", "pipelines", "keep_samd", "AdlTrainer", "model", "*", "training.json"))
    with open(adl[0]) as f:
        assert json.load(f)["routing"]["train_serve_agreement"] == 1.0


def test_run_writes_the_report_and_its_plots(pipeline_run):
    tmp, _ = pipeline_run
    out = _run([sys.executable, "-m", "pipelines.report", "--output", os.path.join(tmp, "runs")], _env(tmp, ""))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "== click AUC" in out.stdout and "mean heterogeneous" in out.stdout
    for model in ("keep_general", "samd", "pepnet", "adl", "grec", "shared_bottom", PLANTED, "keep_downstream"):
        assert model in out.stdout
    assert "RelaImpr vs shared_bottom" in out.stdout
    folder = out.stdout.strip().split("files (HTML, PNG plots, metrics.json): ")[-1]
    for name in ("report.md", "report.html", "metrics.json", "auc_click.png", "auc_conversion.png", "auc_cart.png",
                 "samd_transfer_weights.png", "samd_representations.png", "adl_clusters.png"):
        assert os.path.getsize(os.path.join(folder, name)) > 0, name
    shutil.copytree(folder, os.path.join(REPORTS, "evaluation"), dirs_exist_ok=True)


def test_every_pushed_model_uses_only_stock_tensorflow_ops(pipeline_run):
    from serving.ops_check import unsupported_ops

    tmp, _ = pipeline_run
    models = [d for d in os.listdir(os.path.join(tmp, "runs", "serving"))
              if os.path.isdir(os.path.join(tmp, "runs", "serving", d))]
    # KEEP, the students, the unified models but the planted one, the knowledge cache and the downstream model
    assert len(models) >= 1 + 8 + 4 + 2
    for model in models:
        assert unsupported_ops(_latest(tmp, model)) == set(), model


def test_pushed_models_answer_grpc_and_rest_like_in_process(pipeline_run):
    import numpy as np
    import tensorflow as tf
    from serving.client import ServingClient

    tmp, _ = pipeline_run
    with _server(tmp) as ports:
        examples = _eval_examples(tmp, 16)
        for model, task in (("keep_general", "cart"), ("samd_banner", "click")):
            expected = tf.saved_model.load(_latest(tmp, model)).signatures["serving_default"](
                examples=tf.constant(examples))[task].numpy()
            with ServingClient(host="127.0.0.1", port=int(ports["grpc_port"])) as client:
                _, grpc_out = client.predict(examples, model=model)
            np.testing.assert_allclose(np.asarray(grpc_out[task]).reshape(-1), expected, atol=1e-5)
            with ServingClient(host="127.0.0.1", port=int(ports["rest_port"]), rest=True) as client:
                _, rest_out = client.predict(examples, model=model)
            np.testing.assert_allclose(np.asarray(rest_out[task]).reshape(-1), expected, atol=1e-5)


@contextlib.contextmanager
def _server(tmp):
    """The embedded model server on the run's models.config, in its own process: yields its ports."""
    import socket

    config = os.path.join(tmp, "runs", "serving", "models.config")
    with socket.socket() as sock:  # a free port for REST (--rest_api_port=0 disables REST, as in TF Serving)
        sock.bind(("127.0.0.1", 0))
        rest_port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "serving.model_server", f"--model_config_file={config}", "--port=0",
         f"--rest_api_port={rest_port}", "--file_system_poll_wait_seconds=0"],
        cwd=REPO, env=_env(tmp, ""), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = ""
        while not line.startswith("ready"):
            line = server.stdout.readline()
            assert line or server.poll() is None, "server exited before it was ready"
        ports = dict(kv.split("=") for kv in line.split()[1:])
        assert int(ports["rest_port"]) == rest_port
        yield ports
    finally:
        server.terminate()
        server.wait(timeout=30)


def _eval_examples(tmp, n):
    import tensorflow as tf

    files = glob.glob(os.path.join(tmp, "runs", "pipelines", "keep_samd", "CsvExampleGen", "examples", "*",
                                   "Split-test", "*"))
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP").take(n)]


def test_plugged_prediction_over_grpc_equals_knowledge_lookup_then_model_in_process(pipeline_run):
    import numpy as np
    import tensorflow as tf
    from serving.client import ServingClient, _raw_id

    tmp, _ = pipeline_run
    with open(os.path.join(tmp, "runs", "serving", "models.config")) as f:
        config = f.read()
    assert 'name: "keep_knowledge"' in config and "num_versions: 5" in config and 'name: "keep_downstream"' in config
    examples = _eval_examples(tmp, 32)
    cache = tf.saved_model.load(_latest(tmp, "keep_knowledge")).signatures["serving_default"]
    looked_up = cache(**{k: tf.constant([_raw_id(e, k) for e in examples]) for k in ("user_id", "item_id", "category_id")})
    # The cache holds the train days only: most test-day users are known, none from the test day alone.
    assert looked_up["found_user"].numpy().mean() > 0.8
    model = tf.saved_model.load(_latest(tmp, "keep_downstream")).signatures
    expected = model["serving_default"](examples=tf.constant(examples), knowledge=looked_up["knowledge"])["click"]
    cache_version = int(os.path.basename(_latest(tmp, "keep_knowledge")))
    with _server(tmp) as ports:
        with ServingClient(host="127.0.0.1", port=int(ports["grpc_port"])) as client:
            served, knowledge_version, out = client.predict_plugged(examples)
    assert served == int(os.path.basename(_latest(tmp, "keep_downstream")))
    assert knowledge_version == cache_version
    np.testing.assert_allclose(out["click"].reshape(-1), expected.numpy(), atol=1e-5)
    record = _evaluation(tmp, "DownstreamEvaluator")
    assert record["blessings"]["keep_downstream"]["blessed"]
    assert "super" not in {record["roles"].get(s) for s in record["metrics"] if s != "ALL"}


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


# Last in the module: it adds a second run to the first one's output folder.
def test_second_run_with_a_new_span_adds_a_knowledge_version_and_warm_starts_the_downstream_model(pipeline_run):
    tmp, _ = pipeline_run
    serving = os.path.join(tmp, "runs", "serving")
    first_cache = sorted(os.listdir(os.path.join(serving, "keep_knowledge")))
    first_model = glob.glob(os.path.join(tmp, "runs", "pipelines", "keep_samd", "DownstreamTrainer", "model", "*"))
    assert len(first_cache) == 1 and len(first_model) == 1
    data = os.path.join(tmp, "data")
    _add_day(data, 3, 4)  # day 4 becomes the test day, 3 validation, 0-2 train
    # Only what this test is about: KEEP, the knowledge cache, the downstream model.
    env = _env(tmp, data, KEEP_SAMD_TRAIN_STEPS="60", KEEP_SAMD_EPOCHS="1",
               KEEP_SAMD_SAMD=json.dumps({"enabled": False}), KEEP_SAMD_UNIFIED=json.dumps({"models": []}))
    run = _run([os.path.join(BIN, "tfx"), "run", "create", "--pipeline_name=keep_samd", "--engine=local"], env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]

    caches = sorted(os.listdir(os.path.join(serving, "keep_knowledge")), key=int)
    assert len(caches) == 2 and caches[0] == first_cache[0]
    models = glob.glob(os.path.join(tmp, "runs", "pipelines", "keep_samd", "DownstreamTrainer", "model", "*"))
    second = [m for m in models if m not in first_model]
    assert len(second) == 1
    with open(os.path.join(second[0], "training.json")) as f:
        record = json.load(f)
    assert record["warm_start"]["base_model"] == first_model[0]
    assert record["warm_start"]["restored"] > 0 and record["warm_start"]["new"] == []
    assert "user_id" in record["warm_start"]["remapped"]  # a day more of train: new users, reordered ids
    assert record["latest_day"] == 2 and record["knowledge_version"] == int(caches[1])
    with open(os.path.join(first_model[0], "training.json")) as f:
        first = json.load(f)
    assert first["warm_start"]["base_model"] is None and first["latest_day"] == 1
