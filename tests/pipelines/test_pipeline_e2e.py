"""The real keep_samd pipeline, run the way users run it (`tfx pipeline create` + `tfx run create`).

Slow (minutes): it runs ExampleGen, StatisticsGen, ExampleValidator and Transform on
Beam, trains KEEP and pushes it, on a small generated data set.

The module's run (`pipeline_run`, once for every test here) is read, never changed, so
the tests pass in any order (`pytest --reverse` runs them backwards). Runs of their own:
test_pipeline_failures.py, test_incremental.py, test_resume.py.
"""

import collections
import contextlib
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from synthetic import generate as G
from tests.pipelines import (BIN, CLI_QUIET, PLANTED, PROGRESS_SECONDS, REPO, TFX_RUN, failure_text as _failed,
                             pipeline_env as _env, read_json as _read_json, run_command as _run)

pytestmark = pytest.mark.e2e
FLOOR = "logistic_regression"  # KEEP_SAMD_BLESSING.floor's default, on in the module's run


Run = collections.namedtuple("Run", "tmp create run")


def _one(pattern):
    files = glob.glob(pattern)
    assert len(files) == 1, f"{pattern}: expected one match, found {files}"
    return files[0]


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("e2e"))
    data = os.path.join(tmp, "data")
    # 4 days: the time split trains on days 0-1, validates on day 2 and tests on day 3.
    G.generate(data, G.GeneratorConfig(rows=16_000, days=4, seed=5), progress=False)
    env = _env(tmp, data, **CLI_QUIET)
    create = _run([os.path.join(BIN, "tfx"), "pipeline", "create", "--pipeline_path=pipelines/local_runner.py",
                   "--engine=local"], env)
    assert create.returncode == 0, _failed(tmp, create)
    run = _run(TFX_RUN, env)
    assert run.returncode == 0, _failed(tmp, run)
    return Run(tmp, create, run)


def _lines(completed):
    return [line for line in (completed.stdout + completed.stderr).splitlines() if line.strip()]


def test_pipeline_create_only_says_it_created_the_pipeline(pipeline_run):
    # The CLI compiles the pipeline file with LocalDagRunner.run stubbed out: nothing ran.
    assert _lines(pipeline_run.create) == ["CLI", "Creating pipeline", 'Pipeline "keep_samd" created successfully.']
    assert glob.glob(os.path.join(pipeline_run.tmp, "runs", "logs", "*-compile.log"))


def _seconds(text):
    """Seconds in a console duration: 1h02m, 2m37s or 12.5s."""
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:([\d.]+)s)?", text)
    assert m and text, text
    h, mi, s = m.groups()
    return int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0)


def test_run_console_shows_each_component_once_started_and_once_done_then_a_summary(pipeline_run):
    tmp, _, run = pipeline_run
    lines = _lines(run)
    assert lines[:2] == ["CLI", "Creating a run for pipeline: keep_samd"], lines[:5]
    header = re.fullmatch(r"keep_samd: run (\S+), (\d+) components; log: (\S+) \(KEEP_SAMD_VERBOSE=1 shows it here\)",
                          lines[2])
    assert header, lines[2]
    total, log = int(header.group(2)), header.group(3)
    assert os.path.dirname(log) == os.path.join(tmp, "runs", "logs")

    per = collections.defaultdict(lambda: {"started": 0, "done": None, "progress": 0})
    rest = []
    for line in lines[3:]:
        m = re.fullmatch(r"\[ *(\d+)/(\d+)\] (\S+) +(started|done in (\S+)(?:  .*)?|\.\.\. \S+ so far .*)", line)
        if not m:
            rest.append(line)
            continue
        assert int(m.group(2)) == total, line
        node = per[(int(m.group(1)), m.group(3))]
        if m.group(4) == "started":
            node["started"] += 1
        elif m.group(5):
            assert node["done"] is None, line
            node["done"] = _seconds(m.group(5))
        else:
            node["progress"] += 1
    assert sorted(i for i, _ in per) == list(range(1, total + 1)), sorted(per)
    for (_, name), node in per.items():
        assert node["started"] == 1 and node["done"] is not None, (name, node)
        # A "still running" line per PROGRESS_SECONDS of the component's run, no more.
        assert node["progress"] <= node["done"] / PROGRESS_SECONDS, (name, node)
    assert any(node["progress"] for node in per.values())  # Transform and the trainers run long enough

    # Nothing but the summary after the components: no warnings, no library output.
    text = "\n".join(lines)
    assert "Warning" not in text and "warn(" not in text
    assert rest[0].startswith("keep_samd: run finished in "), rest
    assert rest[1].split() == ["model", "test", "AUC", "blessed", "pushed", "version"], rest
    table = {row.split()[0]: row.split()[1:] for row in rest[2:] if not row.strip().endswith(")") and ":" not in row}
    keep = _evaluation(tmp, "KeepEvaluator")
    assert table["keep_general"][0] == f"{keep['metrics']['ALL']['click']['auc']:.3f}"
    blessings = _blessings(tmp)
    for name, b in blessings.items():  # blessed and pushed, or neither and the reason under the table
        assert table[name][1:] == (["yes", os.path.basename(_latest(tmp, name))] if b["blessed"]
                                   else ["no", "not", "pushed"]), (name, b)
        assert (f"    {name}: {b['reason']}" in rest) == (not b["blessed"]), name
    assert table[PLANTED][1:] == ["no", "not", "pushed"]
    assert len([name for name in table if name.startswith("samd_")]) == 8
    report = next(row for row in rest if row.strip().startswith("report: ")).split()[1]
    assert os.path.isfile(report), report
    assert rest[-1].strip() == f"log: {log}"
    # The log has what the terminal was spared.
    with open(log) as f:
        logged = f.read()
    assert "Component KeepTrainer is running" in logged and "Epoch 1/" in logged
def test_pipeline_pushes_a_servable_model_the_floor_always(pipeline_run):
    tmp = pipeline_run.tmp
    # The floor is pushed whatever the others do (KEEP only when not below it: not on this tiny data).
    saved_model = _one(os.path.join(tmp, "runs", "serving", FLOOR, "*", "saved_model.pb"))
    # Root, metadata and pushed models live under the output folder, none in the source tree.
    assert os.path.exists(os.path.join(tmp, "runs", "metadata", "keep_samd", "metadata.sqlite"))
    assert os.path.isdir(os.path.join(tmp, "runs", "pipelines", "keep_samd", "Transform"))
    # The push also wrote TF Serving's models.config, and the export carries warm-up requests.
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2
    with open(os.path.join(tmp, "runs", "serving", "models.config")) as f:
        config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    listed = {c.name: c.base_path for c in config.model_config_list.config}
    assert listed[FLOOR] == os.path.join(tmp, "runs", "serving", FLOOR)
    pushed = {d for d in os.listdir(os.path.join(tmp, "runs", "serving"))
              if os.path.isdir(os.path.join(tmp, "runs", "serving", d))}
    assert set(listed) == pushed  # every pushed model, SAMD students and unified models included
    version_dir = os.path.dirname(saved_model)
    assert os.path.getsize(os.path.join(version_dir, "assets.extra", "tf_serving_warmup_requests")) > 0


def test_keep_export_predicts_in_a_fresh_process_that_imports_nothing_from_the_repo(pipeline_run, reports_dir,
                                                                                     record_property):
    from tests.conftest import KEEP_E2E_PROPERTY

    tmp = pipeline_run.tmp
    report = _standalone(tmp, _export(tmp, "keep_general"))
    assert report["knowledge_width"] == 48 + 3 * 16 + 3 * 64
    overall = report["scenarios"]["ALL"]
    with open(os.path.join(reports_dir, "keep_e2e.json"), "w") as f:
        json.dump(report, f, indent=1)
    record_property(KEEP_E2E_PROPERTY, os.path.join(reports_dir, "keep_e2e.json"))  # for the terminal summary
    print(f"\nKEEP test click AUC {overall['click']['auc']:.3f} (oracle {overall['click']['oracle_auc']:.3f}) "
          f"on {overall['rows']} rows; report in {reports_dir}/keep_e2e.json")
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
    pattern = os.path.join(tmp, "runs", "serving", model, "*", "saved_model.pb")
    versions = sorted(glob.glob(pattern), key=lambda p: int(os.path.basename(os.path.dirname(p))))
    assert versions, f"{pattern}: no pushed version"
    return os.path.dirname(versions[-1])


def _dir_size(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _trained(tmp, trainer):
    """A trainer's exported model (pushed or not: a model below the floor is not)."""
    return _one(os.path.join(tmp, "runs", "pipelines", "keep_samd", trainer, "model", "*", "Format-Serving"))


def _export(tmp, name):
    """A model's pushed version when it was blessed, else its trainer's export (the same SavedModel)."""
    from models import registry

    if _blessings(tmp)[name]["blessed"]:
        return _latest(tmp, name)
    return _trained(tmp, f"{registry.get(name).title}Trainer")


def test_every_scenario_gets_a_standalone_samd_student(pipeline_run):
    tmp = pipeline_run.tmp
    with open(os.path.join(tmp, "data", "scenarios.csv")) as f:
        scenarios = [line.split(",")[0] for line in f.read().split("\n")[1:] if line]
    teacher, students = _trained(tmp, "KeepTrainer"), _trained(tmp, "SamdTrainer")
    for sid in scenarios:
        assert _dir_size(os.path.join(students, sid)) < 0.5 * _dir_size(teacher), sid
    report = _standalone(tmp, os.path.join(students, "payment_page"))
    assert report["tasks"] == ["click", "conversion", "cart"]  # an MMoE student
    assert report["scenarios"]["payment_page"]["click"]["auc"] is not None
    forbidden = ("teacher", "meta", "representation", "cluster", "student_projections", "attention")
    assert not [v for v in report["variables"] if any(f in v for f in forbidden)], report["variables"]
    assert any("pay_channel" in v for v in report["variables"])  # its own heterogeneous feature
    transfer = _read_json(_one(os.path.join(tmp, "runs", "pipelines", "keep_samd", "SamdTrainer", "transfer_report",
                                            "*", "transfer.json")))
    assert set(transfer["scenarios"]) == set(scenarios)
    w = transfer["scenarios"]["banner"]["transfer_weights"]
    # M_g rows; the student's layers plus the "no transfer" column (SamdConfig.null_transfer, on by default).
    assert len(w) == len(transfer["teacher_layers"]) and len(w[0]) == len(transfer["student_layers"]["banner"]) + 1


def test_every_unified_model_and_baseline_is_pushed_and_predicts_standalone(pipeline_run):
    from models import registry

    tmp = pipeline_run.tmp
    for name in registry.names("unified"):
        # One not blessed (the planted one; one below the floor) is not pushed: its export still predicts.
        report = _standalone(tmp, _export(tmp, name))
        assert report["tasks"] == ["click", "conversion", "cart"], name
        if name == PLANTED:
            continue
        overall = report["scenarios"]["ALL"]
        assert overall["rows"] > 1000 and 0.0 < overall["click"]["mean_prediction"] < 1.0, name
        assert overall["click"]["auc"] > 0.5, (name, overall["click"])


def _evaluation(tmp, component):
    return _read_json(_one(os.path.join(tmp, "runs", "pipelines", "keep_samd", component, "evaluation", "*",
                                        "evaluation.json")))


def _evaluations(tmp):
    """{evaluator: its evaluation.json} of every evaluator of the run."""
    paths = glob.glob(os.path.join(tmp, "runs", "pipelines", "keep_samd", "*Evaluator", "evaluation", "*",
                                   "evaluation.json"))
    return {path.split(os.sep)[-4]: _read_json(path) for path in paths}


def _blessings(tmp):
    """{served model: its blessing} of every evaluator of the run."""
    return {name: b for record in _evaluations(tmp).values() for name, b in record["blessings"].items()}


def _failed_checks(record, b):
    """What the blessing rule refuses a served model for, in the evaluator's order, from what it recorded: a
    metric that cannot be computed; then (not for the floor, blessed on that alone) chance's margin, a
    regression from the pushed version, and a paired interval entirely below the floor's."""
    config = record["blessing_config"]
    metric, _, task = config["metric"].partition("_")
    value = record["metrics"].get(b["slice"], {}).get(task, {}).get(metric)
    if value is None or b["fallback"]:
        return ["cannot be computed"] if value is None else []
    assert record["baseline"] == "chance"  # no KEEP_SAMD_BLESSING.baselines in this run
    checks = (("does not beat chance", value < 0.5 + config["margin"]),
              ("regresses", b["previous"] is not None and value < b["previous"] - config["tolerance"]),
              (f"{config['metric']} {value:.3f} is below the floor {FLOOR}",
               b["floor"]["difference"] is not None and b["floor"]["difference"][2] < 0))
    return [phrase for phrase, failed in checks if failed]


def test_each_model_is_blessed_and_pushed_by_the_rule_and_the_floor_always(pipeline_run):
    import numpy as np

    from components.model_evaluator import metrics as M
    from models import registry

    tmp = pipeline_run.tmp
    planted = _evaluation(tmp, "MmoeEvaluator")
    verdict = planted["blessings"][PLANTED]
    assert not verdict["blessed"] and "does not beat chance" in verdict["reason"], verdict
    assert planted["metrics"]["ALL"]["click"]["auc"] < 0.5
    with open(os.path.join(tmp, "runs", "serving", "models.config")) as f:
        config = f.read()
    floor = _evaluation(tmp, "LogisticRegressionEvaluator")["blessings"][FLOOR]
    assert floor["blessed"] and floor["fallback"] and f'name: "{FLOOR}"' in config
    evaluations = _evaluations(tmp)
    assert set(evaluations) == {f"{registry.get(n).title}Evaluator" for n in registry.names()}
    for record in evaluations.values():
        for name, b in record["blessings"].items():
            failed = _failed_checks(record, b)
            assert b["blessed"] == (not failed), (name, failed, b)
            assert not failed or failed[0] in b["reason"], (name, failed, b)  # the reason names what refused it
            assert os.path.isdir(os.path.join(tmp, "runs", "serving", name)) == b["blessed"], name  # pushed iff
            assert (f'name: "{name}"' in config) == b["blessed"], name
            if b["fallback"] or b["floor"] is None:
                continue
            # Compared with the floor on its own rows (a student: its scenario's); the downstream model is not.
            click = record["metrics"][b["slice"]]["click"]
            assert b["floor"]["model"] == FLOOR, name
            if b["floor"]["skipped"]:
                assert (name, b["floor"]["skipped"]) == ("keep_downstream", "off for this model")
                continue
            assert b["floor"]["rows"] == click["rows"], name
            if b["floor"]["difference"] is not None:
                assert b["floor"]["difference"][0] == pytest.approx(click["auc"] - b["floor"]["value"]), name
    # The recorded interval is the paired one on the same rows of both evaluators' saved predictions.
    saved = {e: dict(np.load(_one(os.path.join(tmp, "runs", "pipelines", "keep_samd", e, "evaluation", "*",
                                               "predictions.npz"))))
             for e in ("LogisticRegressionEvaluator", "KeepEvaluator", "SamdEvaluator")}
    lr = saved["LogisticRegressionEvaluator"]
    for evaluator, name, rows in (("KeepEvaluator", "keep_general", slice(None)),
                                  ("SamdEvaluator", "samd_banner", lr["scenario"] == "banner")):
        ours = saved[evaluator]
        assert (ours["user"] == lr["user"]).all() and (ours["click_label"] == lr["click_label"]).all()
        expected = M.paired_auc_difference(lr["click_label"][rows], M.clipped(ours["click"][rows]),
                                           M.clipped(lr["click"][rows]))
        assert evaluations[evaluator]["blessings"][name]["floor"]["difference"] == pytest.approx(expected), name
    for component in ("KeepEvaluator", "PepnetEvaluator", "SharedBottomEvaluator"):
        record = evaluations[component]
        assert set(record["metrics"]) == {"ALL", *record["roles"]}
        assert record["metrics"]["ALL"]["click"]["gauc"] is not None
    assert len(evaluations["SamdEvaluator"]["blessings"]) == 8
    # ADL routes a sample by the stored centres in training as in serving.
    adl = _one(os.path.join(tmp, "runs", "pipelines", "keep_samd", "AdlTrainer", "model", "*", "training.json"))
    assert _read_json(adl)["routing"]["train_serve_agreement"] == 1.0


def test_run_writes_the_report_and_its_plots(pipeline_run, reports_dir):
    tmp = pipeline_run.tmp
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
    shutil.copytree(folder, os.path.join(reports_dir, "evaluation"), dirs_exist_ok=True)


def test_every_pushed_model_uses_only_stock_tensorflow_ops(pipeline_run):
    from serving.ops_check import unsupported_ops

    tmp = pipeline_run.tmp
    models = [d for d in os.listdir(os.path.join(tmp, "runs", "serving"))
              if os.path.isdir(os.path.join(tmp, "runs", "serving", d))]
    # Every blessed model (the floor always) and the knowledge cache
    assert set(models) == {n for n, b in _blessings(tmp).items() if b["blessed"]} | {"keep_knowledge"}
    assert FLOOR in models
    for model in models:
        assert unsupported_ops(_latest(tmp, model)) == set(), model


def test_pushed_models_answer_grpc_and_rest_like_in_process(pipeline_run):
    import numpy as np
    import tensorflow as tf
    from serving.client import ServingClient

    tmp = pipeline_run.tmp
    # The floor (always pushed) and a pushed student
    student = min(n for n, b in _blessings(tmp).items() if n.startswith("samd_") and b["blessed"])
    with _server(tmp) as ports:
        examples = _eval_examples(tmp, 16)
        for model, task in ((FLOOR, "cart"), (student, "click")):
            expected = tf.saved_model.load(_latest(tmp, model)).signatures["serving_default"](
                examples=tf.constant(examples))[task].numpy()
            with ServingClient(host="127.0.0.1", port=int(ports["grpc_port"])) as client:
                _, grpc_out = client.predict(examples, model=model)
            np.testing.assert_allclose(np.asarray(grpc_out[task]).reshape(-1), expected, atol=1e-5)
            with ServingClient(host="127.0.0.1", port=int(ports["rest_port"]), rest=True) as client:
                _, rest_out = client.predict(examples, model=model)
            np.testing.assert_allclose(np.asarray(rest_out[task]).reshape(-1), expected, atol=1e-5)


@contextlib.contextmanager
def _server(tmp, deadline_s=300):
    """The embedded model server on the run's models.config, in its own process: yields its ports.

    It binds free ports itself and writes them to --port_file once it serves the models:
    a port picked here and released for it could be taken in between.
    """
    import tempfile

    config = os.path.join(tmp, "runs", "serving", "models.config")
    folder = tempfile.mkdtemp(prefix="server-", dir=tmp)
    port_file = os.path.join(folder, "ports.json")
    log_path = os.path.join(folder, "server.log")

    def log():
        with open(log_path, errors="replace") as f:
            return f.read()[-3000:]

    with open(log_path, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "serving.model_server", f"--model_config_file={config}", "--port=0",
             "--rest_api_port=-1", f"--port_file={port_file}", "--file_system_poll_wait_seconds=0"],
            cwd=REPO, env=_env(tmp, ""), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + deadline_s
        while not os.path.exists(port_file):
            assert server.poll() is None, f"server exited ({server.returncode}) before writing {port_file}:\n{log()}"
            assert time.monotonic() < deadline, f"{port_file}: not written in {deadline_s}s\n{log()}"
            time.sleep(0.2)
        ports = _read_json(port_file)
        assert ports["grpc_port"] > 0 and ports["rest_port"] > 0, ports
        yield ports
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)


def _eval_examples(tmp, n):
    import tensorflow as tf

    pattern = os.path.join(tmp, "runs", "pipelines", "keep_samd", "CsvExampleGen", "examples", "*", "Split-test", "*")
    files = glob.glob(pattern)
    assert files, f"{pattern}: no test split"
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP").take(n)]


def test_plugged_prediction_over_grpc_equals_knowledge_lookup_then_model_in_process(pipeline_run):
    import numpy as np
    import tensorflow as tf
    from serving.client import ServingClient, _raw_id

    tmp = pipeline_run.tmp
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
