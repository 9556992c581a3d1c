"""ScenarioTrainer's executor: TFX's GenericExecutor, whose run_fn also gets the scenario table."""

import json
import os

from tfx.proto import trainer_pb2
from tfx.types import standard_artifacts
from tfx.types.standard_component_specs import (CUSTOM_CONFIG_KEY, EVAL_ARGS_KEY, EXAMPLES_KEY, MODEL_KEY,
                                                MODEL_RUN_KEY, RUN_FN_KEY, TRAIN_ARGS_KEY)
from tfx.utils import proto_utils

from components.artifacts import ScenarioTable
from components.keys import SCENARIO_TABLE_KEY
from components.scenario_trainer.executor import SCENARIOS_CSV_KEY, Executor
from schemas.scenarios import SCENARIOS_FILE
from tests.components import local_artifact

CALLS = []


def recording_run_fn(fn_args):
    CALLS.append(fn_args)
    os.makedirs(fn_args.serving_model_dir)  # GenericExecutor fails a run_fn that exported nothing


_artifact = local_artifact


def test_run_fn_finds_the_scenario_table_in_custom_config(tmp_path):
    examples = _artifact(standard_artifacts.Examples, tmp_path / "examples", ["train", "validation"])
    table = _artifact(ScenarioTable, tmp_path / "scenarios")
    CALLS.clear()
    Executor().Do(
        {EXAMPLES_KEY: [examples], SCENARIO_TABLE_KEY: [table]},
        {MODEL_KEY: [_artifact(standard_artifacts.Model, tmp_path / "model")],
         MODEL_RUN_KEY: [_artifact(standard_artifacts.ModelRun, tmp_path / "model_run")]},
        {RUN_FN_KEY: f"{__name__}.recording_run_fn",
         TRAIN_ARGS_KEY: proto_utils.proto_to_json(trainer_pb2.TrainArgs(splits=["train"])),
         EVAL_ARGS_KEY: proto_utils.proto_to_json(trainer_pb2.EvalArgs(splits=["validation"])),
         CUSTOM_CONFIG_KEY: json.dumps({"epochs": 2})})
    (fn_args,) = CALLS
    assert fn_args.custom_config == {"epochs": 2, SCENARIOS_CSV_KEY: os.path.join(table.uri, SCENARIOS_FILE)}
    assert fn_args.train_files == [os.path.join(examples.uri, "Split-train", "*")]
