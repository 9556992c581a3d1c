"""Executor of ScenarioTrainer: TFX's GenericExecutor, with the scenario table's path in custom_config."""

import os

from tfx.components.trainer import executor as trainer_executor
from tfx.types import artifact_utils
from tfx.types.standard_component_specs import CUSTOM_CONFIG_KEY
from tfx.utils import json_utils

from components.keys import SCENARIO_TABLE_KEY
from schemas.scenarios import SCENARIOS_FILE

SCENARIOS_CSV_KEY = "scenarios_csv"  # the custom_config key run_fn reads (trainers.config.KerasTrainerConfig)


class Executor(trainer_executor.GenericExecutor):
    def Do(self, input_dict, output_dict, exec_properties):
        table = artifact_utils.get_single_uri(input_dict[SCENARIO_TABLE_KEY])
        custom = json_utils.loads(exec_properties.get(CUSTOM_CONFIG_KEY) or "null") or {}
        custom[SCENARIOS_CSV_KEY] = os.path.join(table, SCENARIOS_FILE)
        super().Do(input_dict, output_dict, {**exec_properties, CUSTOM_CONFIG_KEY: json_utils.dumps(custom)})
