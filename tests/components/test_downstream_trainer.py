"""DownstreamTrainer's executor on a non-local filesystem: scenarios from the ScenarioTable artifact."""

import json
import os

import pytest
from tfx.dsl.io import fileio
from tfx.types import standard_artifacts
from tfx.types.standard_component_specs import CUSTOM_CONFIG_KEY, EXAMPLES_KEY, MODEL_KEY, TRANSFORM_GRAPH_KEY

from components.artifacts import ScenarioTable
from components.downstream_trainer.executor import Executor
from components.keys import SCENARIO_TABLE_KEY, TRAIN_STEPS_KEY
from trainers.records import TRAINING_FILE
from tests.components import artifact, ram_dir
from tests.trainers import custom_config

pytestmark = pytest.mark.slow  # a Transform run (the session's `transformed` fixture) and training


def test_executor_trains_the_sub_scenarios_of_the_scenario_table(ram_transformed):
    examples = artifact(standard_artifacts.Examples, ram_transformed["examples"], ["train", "validation"])
    graph = artifact(standard_artifacts.TransformGraph, ram_transformed["graph"])
    table = artifact(ScenarioTable, ram_transformed["scenarios"])
    out = artifact(standard_artifacts.Model, ram_dir("downstream"))
    Executor().Do({EXAMPLES_KEY: [examples], TRANSFORM_GRAPH_KEY: [graph], SCENARIO_TABLE_KEY: [table]},
                  {MODEL_KEY: [out]},
                  {TRAIN_STEPS_KEY: 10, CUSTOM_CONFIG_KEY: json.dumps(custom_config(
                      "downstream", plugged=False, downstream={"batch_size": 128}, epochs=1, spans=0, seed=3))})
    with fileio.open(os.path.join(out.uri, TRAINING_FILE)) as f:
        record = json.loads(f.read())
    with fileio.open(os.path.join(ram_transformed["scenarios"], "scenarios.csv")) as f:
        rows = [line.split(",") for line in f.read().splitlines()[1:]]
    assert record["scenarios"] == [r[0] for r in rows if r[1] != "super"]
    assert not record["plugged"] and out.get_int_custom_property("warm_started") == 0
    assert fileio.exists(os.path.join(out.uri, "Format-Serving", "saved_model.pb"))
