"""The pipeline's structure (pipelines/keep_samd.py) with the Tuner on: built, never run."""

import json

import pytest

from models import registry
from pipelines.keep_samd import create_pipeline
from pipelines.options import PipelineOptions


def _nodes(tmp_path, **options):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    pipeline = create_pipeline(PipelineOptions(output_dir=str(tmp_path / "runs"), data_root=str(data), **options))
    return {c.id: c for c in pipeline.components}, [c.id for c in pipeline.components]


def test_without_the_option_no_model_is_tuned(tmp_path):
    nodes, _ = _nodes(tmp_path)
    assert not [n for n in nodes if n.endswith("Tuner")]
    assert "hyperparameters" not in nodes["KeepTrainer"].inputs


def test_each_keras_models_tuner_feeds_its_trainer_the_best_hyperparameters(tmp_path):
    from tfx.proto import trainer_pb2
    from tfx.utils import proto_utils

    nodes, order = _nodes(tmp_path, tuner={"enabled": True, "max_trials": 3}, samd={"teacher": "super"})
    keras = registry.names("general") + registry.names("unified")
    assert sorted(n for n in nodes if n.endswith("Tuner")) == sorted(f"{registry.get(m).title}Tuner" for m in keras)
    for model in keras:
        title = registry.get(model).title
        tuner, trainer = nodes[f"{title}Tuner"], nodes[f"{title}Trainer"]
        channel = trainer.inputs["hyperparameters"]
        assert (channel.producer_component_id, channel.output_key) == (tuner.id, "best_hyperparameters")
        assert order.index(tuner.id) < order.index(trainer.id)
        assert tuner.exec_properties["tuner_fn"] == "trainers.tuner.tuner_fn"
        # the same trainer config, the trials added; fitted on train, scored on validation (never test)
        tuned = json.loads(tuner.exec_properties["custom_config"])
        assert tuned.pop("max_trials") == 3 and tuned == json.loads(trainer.exec_properties["custom_config"])
        for key in ("train_args", "eval_args"):
            assert tuner.exec_properties[key] == trainer.exec_properties[key]
        eval_args = proto_utils.json_to_proto(tuner.exec_properties["eval_args"], trainer_pb2.EvalArgs())
        assert list(eval_args.splits) == ["validation"]
        assert tuner.inputs["examples"].producer_component_id == "Transform"
    # SAMD's, the stage-two and the super-scenario teacher's trainers are not tuned
    for trainer in ("SamdTrainer", "DownstreamTrainer", "SamdTeacherTrainer", "KnowledgeCenter"):
        assert "hyperparameters" not in nodes[trainer].inputs


def test_the_option_can_tune_some_models_only(tmp_path):
    nodes, _ = _nodes(tmp_path, tuner={"enabled": True, "models": ["pepnet"]},
                      unified={"models": ["pepnet", "mmoe"]})
    assert [n for n in nodes if n.endswith("Tuner")] == ["PepnetTuner"]
    assert "hyperparameters" not in nodes["MmoeTrainer"].inputs
    with pytest.raises(ValueError, match=r"KEEP_SAMD_TUNER.models: \['adl'\]: expected Keras models this run"):
        _nodes(tmp_path, tuner={"enabled": True, "models": ["adl"]}, unified={"models": ["pepnet"]})


def test_a_tuner_and_its_trainer_run_on_the_session_transform(transformed, tmp_path):
    """TFX's own Tuner and Trainer executors, Tuner -> Trainer, on the small Transform (slow: the Transform)."""
    import glob

    from tfx import v1 as tfx

    from pipelines import keep_samd

    data, imported = transformed
    options = PipelineOptions(output_dir=str(tmp_path / "runs"), data_root=data, train_steps=20, eval_steps=2,
                              epochs=2, tuner={"enabled": True, "max_trials": 2},
                              unified={"models": ["logistic_regression"], "batch_size": 128,
                                       "configs": {"logistic_regression": {"cross_buckets": 256}}})
    head = keep_samd._imported_head(options, imported)
    nodes = keep_samd._keras_model(options, head, "logistic_regression")
    assert [n.id for n in nodes] == ["LogisticRegressionTuner", "LogisticRegressionTrainer"]
    tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
        pipeline_name="tuner_to_trainer", pipeline_root=options.pipeline_root, components=head["components"] + nodes,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            options.metadata_path)))
    (best,) = glob.glob(f"{options.pipeline_root}/LogisticRegressionTuner/best_hyperparameters/*/*.txt")
    with open(best) as f:
        values = json.load(f)["values"]
    (results,) = glob.glob(f"{options.pipeline_root}/LogisticRegressionTuner/tuner_results/*/*.json")
    with open(results) as f:
        trials = json.load(f)
    assert len(trials) == 2 and set(values) == {"learning_rate", "l2"}  # cross_buckets is the options'
    assert {k: v for k, v in max(trials, key=lambda t: t["score"]).items() if k in values} == values
    (training,) = glob.glob(f"{options.pipeline_root}/LogisticRegressionTrainer/model/*/training.json")
    with open(training) as f:
        record = json.load(f)
    assert record["hyperparameters"] == values and record["optimizer"] == f"Adam({values['learning_rate']:g})"
