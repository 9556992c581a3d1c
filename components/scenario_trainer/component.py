"""ScenarioTrainer: TFX's Trainer with one more input, RawDataCheck's scenario table.

A stock Trainer cannot take another artifact, and a path in custom_config would hide
the table from ML Metadata (and need the data folder mounted on Kubeflow). The run_fn
finds the table's scenarios.csv at `custom_config["scenarios_csv"]` (set by the
executor from the artifact). Used for SAMD's super-scenario teacher (KEEP on the rows
of some roles only).
"""

from tfx import types as tfx_types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.proto import trainer_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter
from tfx.utils import json_utils

from components import artifacts
from components.keys import SCENARIO_TABLE_KEY
from components.scenario_trainer import executor


class ScenarioTrainerSpec(standard_component_specs.TrainerSpec):
    INPUTS = {**standard_component_specs.TrainerSpec.INPUTS,
              SCENARIO_TABLE_KEY: ChannelParameter(type=artifacts.ScenarioTable)}


class ScenarioTrainer(base_component.BaseComponent):
    """Args: those of tfx.components.Trainer with `run_fn` (examples, transform_graph, schema, train_args,
    eval_args, custom_config), and `scenario_table` (RawDataCheck's `scenarios`)."""

    SPEC_CLASS = ScenarioTrainerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, examples, transform_graph, schema, scenario_table, run_fn: str,
                 train_args: trainer_pb2.TrainArgs, eval_args: trainer_pb2.EvalArgs, custom_config=None):
        super().__init__(spec=ScenarioTrainerSpec(
            examples=examples, transform_graph=transform_graph, schema=schema, scenario_table=scenario_table,
            run_fn=run_fn, train_args=train_args, eval_args=eval_args,
            custom_config=json_utils.dumps(custom_config or {}),
            model=tfx_types.Channel(type=standard_artifacts.Model),
            model_run=tfx_types.Channel(type=standard_artifacts.ModelRun)))
