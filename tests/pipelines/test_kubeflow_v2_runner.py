import json
import os
import subprocess
import sys

import pytest
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from pipelines import kubeflow_v2_runner
from pipelines.keep_samd import create_pipeline
from pipelines.options import PipelineOptions


def test_compiles_a_kfp_v2_pipeline_spec(tmp_path):
    out = tmp_path / "keep_samd_pipeline.json"
    assert kubeflow_v2_runner.main([
        "--image", "registry.example/keep_samd:1", "--output", "gs://bucket/runs", "--data", "gs://bucket/data",
        "--pipeline-file", str(out), "--beam-args", "--runner=DataflowRunner --project=p",
    ]) == 0
    spec = json.loads(out.read_text())
    parsed = json_format.ParseDict(spec.get("pipelineSpec", spec), pipeline_spec_pb2.PipelineSpec(),
                                   ignore_unknown_fields=True)
    assert parsed.pipeline_info.name == "keep-samd"
    from models import registry
    unified = {f"{registry.get(m).title}{kind}" for m in registry.names("unified")
               for kind in ("Trainer", "Evaluator", "Pusher")}
    assert set(parsed.root.dag.tasks) == {
        "ImportSchemaGen", "RawDataCheck", "CsvExampleGen", "StatisticsGen", "ExampleValidator", "ValidationGate",
        "ScenarioSimilarity", "Transform", "KeepTrainer", "KeepEvaluator", "KeepPusher", "SamdTrainer",
        "SamdEvaluator", "SamdPusher", "EvaluationReport", "KnowledgeCenter", "KnowledgePusher", "DownstreamTrainer",
        "DownstreamEvaluator", "DownstreamPusher"} | unified
    text = out.read_text()
    assert "registry.example/keep_samd:1" in text and "DataflowRunner" in text
    # KFP runs no custom driver: the raw-data check (a folder, not an artifact) is never cached there.
    caching = {name: task.caching_options.enable_cache for name, task in parsed.root.dag.tasks.items()}
    assert caching["Transform"] and not caching["RawDataCheck"]


def _constant(parameter):
    constant = parameter.get("runtimeValue", {}).get("constantValue", {})
    return int(constant["intValue"]) if "intValue" in constant else constant.get("stringValue")


def _tasks(spec):
    """{task: {parameter: its constant}} of a compiled pipeline JSON."""
    spec = spec.get("pipelineSpec", spec)
    return {task: {name: _constant(value) for name, value in node.get("inputs", {}).get("parameters", {}).items()}
            for task, node in spec["root"]["dag"]["tasks"].items()}


def test_every_option_the_local_runner_reads_reaches_the_compiled_spec(tmp_path, monkeypatch):
    out = tmp_path / "keep_samd_pipeline.json"
    for name, value in {"KEEP_SAMD_SEED": "7", "KEEP_SAMD_EPOCHS": "4", "KEEP_SAMD_TRAIN_STEPS": "123",
                        "KEEP_SAMD_SAMD": json.dumps({"train_steps": 45, "samd": {"batch_size": 96}}),
                        "KEEP_SAMD_UNIFIED": json.dumps({"models": ["pepnet", "shared_bottom"], "batch_size": 77}),
                        "KEEP_SAMD_BLESSING": json.dumps({"margin": 0.021}),
                        "KEEP_SAMD_DOWNSTREAM": json.dumps({"enabled": False}),
                        "KEEP_SAMD_OUTPUT": "gs://bucket/from-env", "KEEP_SAMD_DATA": "gs://bucket/data-env"}.items():
        monkeypatch.setenv(name, value)
    assert kubeflow_v2_runner.main(["--pipeline-file", str(out), "--data", "gs://bucket/data-flag"]) == 0
    tasks = _tasks(json.loads(out.read_text()))
    # KEEP_SAMD_UNIFIED's models and KEEP_SAMD_DOWNSTREAM's switch decide which nodes there are.
    assert {"PepnetTrainer", "SharedBottomTrainer"} <= set(tasks)
    assert not {"AdlTrainer", "GrecTrainer", "MmoeTrainer", "DownstreamTrainer", "KnowledgeCenter"} & set(tasks)
    keep = json.loads(tasks["KeepTrainer"]["custom_config"])
    assert keep["seed"] == 7 and keep["epochs"] == 4
    assert json.loads(tasks["KeepTrainer"]["train_args"])["num_steps"] == 123
    pepnet = json.loads(tasks["PepnetTrainer"]["custom_config"])
    assert pepnet["seed"] == 7 and pepnet["epochs"] == 4 and pepnet["batch_size"] == 77
    samd = json.loads(tasks["SamdTrainer"]["custom_config"])
    assert samd["seed"] == 7 and samd["samd"]["batch_size"] == 96
    assert tasks["SamdTrainer"]["train_steps"] == 45
    for evaluator in ("KeepEvaluator", "SamdEvaluator", "PepnetEvaluator"):
        assert json.loads(tasks[evaluator]["blessing_config"]) == {"margin": 0.021}
    # The output folder from the variable, the data folder from the flag (a flag wins), both as URIs.
    text = out.read_text()
    assert "gs://bucket/from-env/pipelines/keep_samd" in text and "gs://bucket/data-flag" in text
    assert "gs://bucket/data-env" not in text


VERTEX = {"project": "proj", "region": "europe-west4", "trainers": ["KeepTrainer", "PepnetTrainer"],
          "worker_pool_specs": [{"machine_spec": {"machine_type": "n1-standard-8"}, "replica_count": 1},
                                {"machine_spec": {"machine_type": "n1-standard-8"}, "replica_count": 2},
                                {"machine_spec": {"machine_type": "n1-highmem-4"}, "replica_count": 2,
                                 "container_spec": {"image_uri": "registry.example/ps:1"}}]}


def _trainers(spec):
    """{task: (executor class path, custom_config)} of the Trainers in a compiled pipeline JSON."""
    spec = spec.get("pipelineSpec", spec)
    out = {}
    for task, node in spec["root"]["dag"]["tasks"].items():
        if task.endswith("Trainer"):
            label = spec["components"][node["componentRef"]["name"]]["executorLabel"]
            args = spec["deploymentSpec"]["executors"][label]["container"]["args"]
            config = node["inputs"]["parameters"].get("custom_config", {}).get("runtimeValue", {})
            out[task] = (args[args.index("--executor_class_path") + 1],
                         json.loads(config.get("constantValue", {}).get("stringValue") or "{}"))
    return out


def test_vertex_training_settings_reach_the_chosen_trainers_in_the_compiled_json(tmp_path, monkeypatch):
    out = tmp_path / "keep_samd_pipeline.json"
    monkeypatch.setenv("KEEP_SAMD_VERTEX_TRAINING", json.dumps(VERTEX))
    assert kubeflow_v2_runner.main(["--image", "registry.example/keep_samd:3", "--output", "gs://bucket/runs",
                                    "--data", "gs://bucket/data", "--pipeline-file", str(out)]) == 0
    trainers = _trainers(json.loads(out.read_text()))
    vertex_executor = "tfx.extensions.google_cloud_ai_platform.trainer.executor.GenericExecutor"
    for task in ("KeepTrainer", "PepnetTrainer"):
        executor, custom = trainers[task]
        assert executor == vertex_executor
        assert custom["ai_platform_enable_vertex"] is True and custom["ai_platform_vertex_region"] == "europe-west4"
        job = custom["ai_platform_training_args"]
        assert job["project"] == "proj"
        assert [p["replica_count"] for p in job["worker_pool_specs"]] == [1, 2, 2]
        # Pools without an image run the pipeline's; the run_fn's own settings are kept.
        assert [p["container_spec"]["image_uri"] for p in job["worker_pool_specs"]] == [
            "registry.example/keep_samd:3", "registry.example/keep_samd:3", "registry.example/ps:1"]
        assert custom["model"]["role"] == ("general" if task == "KeepTrainer" else "unified") and custom["model_name"]
    for task in ("AdlTrainer", "SamdTrainer", "DownstreamTrainer"):  # not chosen, or not distribution-aware
        executor, custom = trainers[task]
        assert executor != vertex_executor and "ai_platform_training_args" not in custom


def test_vertex_training_refuses_trainers_that_cannot_train_on_several_workers(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"\['SamdTrainer'\] cannot train on several workers"):
        kubeflow_v2_runner.main(["--pipeline-file", str(tmp_path / "p.json"),
                                 "--vertex-training", json.dumps({**VERTEX, "trainers": ["SamdTrainer"]})])
    # the super-scenario teacher needs ScenarioTrainer's executor, which hands its run_fn the scenario table
    monkeypatch.setenv("KEEP_SAMD_SAMD", json.dumps({"teacher": "super"}))
    with pytest.raises(ValueError, match=r"\['SamdTeacherTrainer'\] cannot train on several workers"):
        kubeflow_v2_runner.main(["--pipeline-file", str(tmp_path / "p.json"),
                                 "--vertex-training", json.dumps({**VERTEX, "trainers": ["SamdTeacherTrainer"]})])
    with pytest.raises(ValueError, match=r"missing \['project'\]"):
        kubeflow_v2_runner.main(["--pipeline-file", str(tmp_path / "p.json"),
                                 "--vertex-training", json.dumps({"region": "r", "worker_pool_specs": []})])


def test_samd_teacher_super_adds_a_super_scenario_keep_trainer(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    ids = lambda **samd: [c.id for c in create_pipeline(PipelineOptions(  # noqa: E731
        output_dir=str(tmp_path / "runs"), data_root=str(data), samd=samd)).components]
    assert "SamdTeacherTrainer" not in ids()
    with_super = ids(teacher="super")
    assert with_super.index("SamdTeacherTrainer") < with_super.index("SamdTrainer")
    with pytest.raises(ValueError, match="teacher='best'"):
        ids(teacher="best")


def test_local_pipeline_has_the_documented_order(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    p = create_pipeline(PipelineOptions(output_dir=str(tmp_path / "runs"), data_root=str(data)))
    ids = [c.id for c in p.components]
    assert ids.index("RawDataCheck") < ids.index("CsvExampleGen") < ids.index("Transform") < ids.index("KeepTrainer")
    upstream = {c.id: {u.id for u in c.upstream_nodes} for c in p.components}
    assert "RawDataCheck" in upstream["CsvExampleGen"]
    assert "ValidationGate" in upstream["Transform"]
    assert p.pipeline_info.pipeline_root.startswith(str(tmp_path / "runs"))
    # Each pusher pushes what its evaluator blessed; the report comes last.
    for title in ("Keep", "Samd", "Pepnet", "Mmoe"):
        assert f"{title}Evaluator" in upstream[f"{title}Pusher"]
    assert ids[-1] == "EvaluationReport"


def test_blessing_options_pick_baselines_and_fail_early(tmp_path):
    import pytest

    data = tmp_path / "data"
    data.mkdir()

    def pipeline(**blessing):
        opts = PipelineOptions(output_dir=str(tmp_path / "runs"), data_root=str(data), blessing=blessing)
        return {c.id: c for c in create_pipeline(opts).components}

    nodes = pipeline(baselines={"pepnet": "shared_bottom", "samd": "keep_general"}, margin=0.0)
    assert "SharedBottomEvaluator" in {u.id for u in nodes["PepnetEvaluator"].upstream_nodes}
    assert "KeepEvaluator" in {u.id for u in nodes["SamdEvaluator"].upstream_nodes}
    # The floor's evaluation is every other evaluator's input; the floor's evaluator has none.
    evaluators = [n for n in nodes if n.endswith("Evaluator")]
    assert len(evaluators) == len(PipelineOptions().trained_models)
    for node in evaluators:
        floor = nodes[node].inputs.get("floor_evaluation")
        assert nodes[node].exec_properties["floor"] == "logistic_regression", node
        if node == "LogisticRegressionEvaluator":
            assert floor is None
        else:
            assert floor is not None and floor.producer_component_id == "LogisticRegressionEvaluator", node
    assert not [n for n, c in pipeline(floor=None).items() if c.inputs.get("floor_evaluation") is not None]
    assert pipeline(models={"samd": {"floor": False}})["SamdEvaluator"].inputs.get("floor_evaluation") is None
    assert nodes["AdlEvaluator"].exec_properties["blessing_config"] == '{"margin": 0.0}'
    with pytest.raises(ValueError, match="'pepnet' -> 'dcn'"):
        pipeline(baselines={"pepnet": "dcn"})
    with pytest.raises(ValueError, match="cycle"):
        pipeline(baselines={"pepnet": "adl", "adl": "pepnet"})
    with pytest.raises(ValueError, match="for grec: .*auc_ctr"):
        pipeline(models={"grec": {"metric": "auc_ctr"}})


def test_tfx_cli_creates_the_pipeline_for_vertex(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    bin_dir = os.path.dirname(sys.executable)
    env = dict(os.environ, VERTEX_HOME=str(tmp_path / "vertex"), PATH=bin_dir + os.pathsep + os.environ["PATH"],
               KEEP_SAMD_IMAGE="registry.example/keep_samd:2")
    run = subprocess.run([os.path.join(bin_dir, "tfx"), "pipeline", "create", "--engine=vertex",
                          f"--pipeline_path={os.path.join(repo, 'pipelines', 'kubeflow_v2_runner.py')}"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert 'Pipeline "keep-samd" created successfully' in run.stdout
    written = json.loads((tmp_path / "vertex" / "keep-samd" / "pipeline.json").read_text())
    assert "registry.example/keep_samd:2" in json.dumps(written)
    tasks = written.get("pipelineSpec", written)["root"]["dag"]["tasks"]
    assert "cachingOptions" not in tasks["RawDataCheck"] and tasks["Transform"]["cachingOptions"]["enableCache"]


def test_written_file_is_where_the_runner_wrote_the_spec(tmp_path):
    """written_file reads the runner's private attributes (checked against TFX 1.16.0)."""
    from tfx import v1 as tfx

    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image="i"),
        output_dir=str(tmp_path / "out"), output_filename="p.json")
    schema = tfx.components.ImportSchemaGen(schema_file=os.path.join(tmp_path, "schema.pbtxt"))
    runner.run(tfx.dsl.Pipeline(pipeline_name="p", pipeline_root=str(tmp_path / "root"), components=[schema]),
               write_out=True)
    assert kubeflow_v2_runner.written_file(runner) == str(tmp_path / "out" / "p.json")
    spec = json.loads((tmp_path / "out" / "p.json").read_text())
    assert "ImportSchemaGen" in spec.get("pipelineSpec", spec)["root"]["dag"]["tasks"]


def test_the_tuner_option_compiles_a_tuner_into_each_keras_trainer(tmp_path, monkeypatch):
    out = tmp_path / "keep_samd_pipeline.json"
    monkeypatch.setenv("KEEP_SAMD_TUNER", json.dumps({"enabled": True, "max_trials": 5}))
    monkeypatch.setenv("KEEP_SAMD_UNIFIED", json.dumps({"models": ["mmoe"]}))
    assert kubeflow_v2_runner.main(["--pipeline-file", str(out), "--data", "gs://bucket/data"]) == 0
    spec = json.loads(out.read_text())
    tasks = spec.get("pipelineSpec", spec)["root"]["dag"]["tasks"]
    assert sorted(t for t in tasks if t.endswith("Tuner")) == ["KeepTuner", "MmoeTuner"]
    for title in ("Keep", "Mmoe"):
        source = tasks[f"{title}Trainer"]["inputs"]["artifacts"]["hyperparameters"]["taskOutputArtifact"]
        assert source == {"producerTask": f"{title}Tuner", "outputArtifactKey": "best_hyperparameters"}
        assert json.loads(_tasks(spec)[f"{title}Tuner"]["custom_config"])["max_trials"] == 5
