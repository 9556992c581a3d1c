"""Executor of ScenarioTrainer: TFX's GenericExecutor, with the scenario table's path in custom_config."""

import os

from tfx.components.trainer import executor as trainer_executor
from tfx.types import artifact_utils

from components.keys import SCENARIO_TABLE_KEY
from schemas.scenarios import SCENARIOS_FILE

SCENARIOS_CSV_KEY = "scenarios_csv"  # the custom_config key run_fn reads (models/keep_trainer.py)


class Executor(trainer_executor.GenericExecutor):
    def _GetFnArgs(self, input_dict, output_dict, exec_properties):
        fn_args = super()._GetFnArgs(input_dict, output_dict, exec_properties)
        table = artifact_utils.get_single_uri(input_dict[SCENARIO_TABLE_KEY])
        fn_args.custom_config = {**(fn_args.custom_config or {}), SCENARIOS_CSV_KEY: os.path.join(table, SCENARIOS_FILE)}
        return fn_args
