"""The custom trainers' executors train on `train` and choose (early-stop) on `validation`, never on `test`."""

import os
from unittest import mock

import pytest
from tfx.types import standard_artifacts
from tfx.types.standard_component_specs import EXAMPLES_KEY, MODEL_KEY, TRANSFORM_GRAPH_KEY

from components.keys import (EVAL_STEPS_KEY, KNOWLEDGE_KEY, SCENARIO_TABLE_KEY, TEACHER_KEY, TRAIN_STEPS_KEY,
                             TRANSFER_REPORT_KEY)
from components.time_split_example_gen import SPLITS
from tests.components import local_artifact


_artifact = local_artifact


def _examples(tmp_path):
    return [_artifact(standard_artifacts.Examples, tmp_path / "examples", SPLITS)]


def _table(tmp_path):
    from components.artifacts import ScenarioTable

    return [_artifact(ScenarioTable, tmp_path / "scenarios")]


def _patterns(call):
    kw = call.kwargs
    return kw["train_pattern"], kw["eval_pattern"]


def _assert_train_and_validation(tmp_path, train, choose):
    assert train == os.path.join(str(tmp_path / "examples"), "Split-train", "*")
    assert choose == os.path.join(str(tmp_path / "examples"), "Split-validation", "*")


def test_samd_trainer_reads_train_and_validation(tmp_path):
    from components.samd_trainer import executor

    teacher = _artifact(standard_artifacts.Model, tmp_path / "teacher")
    os.makedirs(tmp_path / "teacher" / "Format-Keras")
    (tmp_path / "teacher" / "Format-Keras" / "config.json").write_text("{}")
    outputs = {MODEL_KEY: [_artifact(standard_artifacts.Model, tmp_path / "out")],
               TRANSFER_REPORT_KEY: [_artifact(standard_artifacts.ModelEvaluation, tmp_path / "report")]}
    with mock.patch("trainers.samd.run", return_value={"students": {}, "train_seconds": 0.0}) as run:
        executor.Executor().Do({EXAMPLES_KEY: _examples(tmp_path), TEACHER_KEY: [teacher],
                                TRANSFORM_GRAPH_KEY: [_artifact(standard_artifacts.TransformGraph, tmp_path / "tg")],
                                SCENARIO_TABLE_KEY: _table(tmp_path)},
                               outputs, {TRAIN_STEPS_KEY: 1, EVAL_STEPS_KEY: 1})
    _assert_train_and_validation(tmp_path, *_patterns(run.call_args))


def test_knowledge_center_reads_train_and_validation(tmp_path):
    from components.knowledge_center import executor

    outputs = {KNOWLEDGE_KEY: [_artifact(standard_artifacts.Model, tmp_path / "out")]}
    record = {"strategy": "both", "width": 4}
    with mock.patch("trainers.knowledge_center.run", return_value=record) as run:
        executor.Executor().Do({EXAMPLES_KEY: _examples(tmp_path),
                                TRANSFORM_GRAPH_KEY: [_artifact(standard_artifacts.TransformGraph, tmp_path / "tg")]},
                               outputs, {TRAIN_STEPS_KEY: 1})
    _assert_train_and_validation(tmp_path, *_patterns(run.call_args))


def test_downstream_trainer_reads_train_and_validation(tmp_path):
    from components.downstream_trainer import executor

    outputs = {MODEL_KEY: [_artifact(standard_artifacts.Model, tmp_path / "out")]}
    record = {"plugged": False, "knowledge_version": None, "train_rows": 1, "warm_start": {"restored": 0}}
    with mock.patch("trainers.downstream.run", return_value=record) as run:
        executor.Executor().Do({EXAMPLES_KEY: _examples(tmp_path),
                                TRANSFORM_GRAPH_KEY: [_artifact(standard_artifacts.TransformGraph, tmp_path / "tg")],
                                SCENARIO_TABLE_KEY: _table(tmp_path)},
                               outputs, {TRAIN_STEPS_KEY: 1})
    _assert_train_and_validation(tmp_path, *_patterns(run.call_args))


def test_pipeline_trainers_fit_on_train_and_early_stop_on_validation(tmp_path):
    from pipelines.keep_samd import create_pipeline
    from pipelines.options import PipelineOptions
    from tfx.proto import trainer_pb2
    from tfx.utils import proto_utils

    (tmp_path / "data").mkdir()
    pipeline = create_pipeline(PipelineOptions(output_dir=str(tmp_path / "runs"), data_root=str(tmp_path / "data")))
    trainers = [c for c in pipeline.components if type(c).__name__ == "Trainer"]
    assert len(trainers) >= 7  # KEEP, 5 unified models and baselines, the linear floor
    for t in trainers:
        train_args = proto_utils.json_to_proto(t.exec_properties["train_args"], trainer_pb2.TrainArgs())
        eval_args = proto_utils.json_to_proto(t.exec_properties["eval_args"], trainer_pb2.EvalArgs())
        assert list(train_args.splits) == ["train"] and list(eval_args.splits) == ["validation"], t.id


@pytest.mark.parametrize("split", ["train", "validation"])
def test_the_evaluator_refuses_an_artifact_without_a_test_split(tmp_path, split):
    from components.model_evaluator import metrics as M

    os.makedirs(tmp_path / f"Split-{split}")
    (tmp_path / f"Split-{split}" / "data.gz").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no Split-test files"):
        M.eval_files(str(tmp_path), "test")
    assert M.eval_files(str(tmp_path), split) == [str(tmp_path / f"Split-{split}" / "data.gz")]
