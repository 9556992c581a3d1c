"""SamdTrainer's executor on a non-local filesystem: one student per scenario of the ScenarioTable artifact."""

import json
import os

import pytest
import tensorflow as tf
import tensorflow_transform as tft
from tfx.dsl.io import fileio
from tfx.types import standard_artifacts
from tfx.types.standard_component_specs import CUSTOM_CONFIG_KEY, EXAMPLES_KEY, MODEL_KEY, TRANSFORM_GRAPH_KEY

from components.artifacts import ScenarioTable, TransferReport
from components.keys import (EVAL_STEPS_KEY, SCENARIO_TABLE_KEY, TEACHER_KEY, TRAIN_STEPS_KEY,
                             TRANSFER_REPORT_KEY)
from components.samd_trainer.executor import Executor
from models import export, registry
from trainers.generic import all_vocab_sizes, keras_model_dir
from trainers.transformed_data import load_transformed
from tests.components import artifact, ram_dir
from tests.trainers import custom_config

pytestmark = pytest.mark.slow  # a Transform run (the session's `transformed` fixture) and training


def _teacher(ram_transformed) -> str:
    """A small, untrained KEEP model saved as the KEEP Trainer saves it (Format-Keras beside Format-Serving)."""
    tft_output = tft.TFTransformOutput(ram_transformed["graph"])
    rows = load_transformed(os.path.join(ram_transformed["examples"], "Split-validation", "*"), tft_output)
    model, _ = registry.get("keep_general").build({"batch_size": 64}, all_vocab_sizes(tft_output))
    model.compile()
    model({k: tf.constant(v[:8]) for k, v in rows.items()}, training=False)
    uri = ram_dir("teacher")
    export.save_keras_model(model, keras_model_dir(os.path.join(uri, "Format-Serving")))
    return uri


def test_executor_trains_a_student_per_scenario_of_the_table(ram_transformed):
    examples = artifact(standard_artifacts.Examples, ram_transformed["examples"], ["train", "validation"])
    inputs = {EXAMPLES_KEY: [examples],
              TRANSFORM_GRAPH_KEY: [artifact(standard_artifacts.TransformGraph, ram_transformed["graph"])],
              TEACHER_KEY: [artifact(standard_artifacts.Model, _teacher(ram_transformed))],
              SCENARIO_TABLE_KEY: [artifact(ScenarioTable, ram_transformed["scenarios"])]}
    model, report = artifact(standard_artifacts.Model, ram_dir("samd")), artifact(TransferReport, ram_dir("report"))
    Executor().Do(inputs, {MODEL_KEY: [model], TRANSFER_REPORT_KEY: [report]},
                  {TRAIN_STEPS_KEY: 4, EVAL_STEPS_KEY: 1,
                   CUSTOM_CONFIG_KEY: json.dumps(custom_config("samd", epochs=1, seed=3, samd={"batch_size": 256}))})
    with fileio.open(os.path.join(ram_transformed["scenarios"], "scenarios.csv")) as f:
        scenarios = [line.split(",")[0] for line in f.read().splitlines()[1:]]
    students = sorted(n.rstrip("/") for n in fileio.listdir(os.path.join(model.uri, "Format-Serving")))
    assert students == sorted(scenarios)
    for sid in students:
        assert fileio.exists(os.path.join(model.uri, "Format-Serving", sid, "saved_model.pb"))
    with fileio.open(os.path.join(report.uri, "transfer.json")) as f:
        transfer = json.loads(f.read())
    assert sorted(transfer["scenarios"]) == sorted(scenarios)
    assert fileio.exists(os.path.join(report.uri, "transfer.npz"))
