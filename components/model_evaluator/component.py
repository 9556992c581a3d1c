"""ModelEvaluator: per-scenario, per-task metrics of one trained model, and its blessing.

One per trained model (KEEP, the SAMD students, each unified model and baseline),
as TFX's Evaluator: its `blessing` (a standard ModelBlessing) goes to the Pusher's
`model_blessing`, so nothing unblessed is pushed. Metrics and rule:
components/model_evaluator/metrics.py and blessing.py.
"""

import json

from tfx import types as tfx_types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import component_spec, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.types.standard_component_specs import BLESSING_KEY, EVALUATION_KEY, EXAMPLES_KEY, MODEL_KEY

from components import artifacts
from components.keys import (BASELINE_EVALUATION_KEY, BLESSING_CONFIG_KEY, FLOOR_EVALUATION_KEY, FLOOR_KEY,
                             KNOWLEDGE_KEY, MODEL_NAME_KEY, SCENARIOS_KEY, SCENARIO_TABLE_KEY, SERVING_DIR_KEY)
from components.model_evaluator import executor


class ModelEvaluatorSpec(component_spec.ComponentSpec):
    PARAMETERS = {
        MODEL_NAME_KEY: ExecutionParameter(type=str),  # the served name (SAMD: prefix of samd_<scenario>)
        SERVING_DIR_KEY: ExecutionParameter(type=str),  # where the pushed versions to compare with live
        BLESSING_CONFIG_KEY: ExecutionParameter(type=str, optional=True),  # JSON of BlessingConfig
        SCENARIOS_KEY: ExecutionParameter(type=str, optional=True),  # JSON list: score only these scenarios
        FLOOR_KEY: ExecutionParameter(type=str, optional=True),  # the floor model's name
    }
    INPUTS = {
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),  # raw (ExampleGen)
        SCENARIO_TABLE_KEY: ChannelParameter(type=artifacts.ScenarioTable),  # the roles of the scenario groups
        MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        BASELINE_EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation, optional=True),
        FLOOR_EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation, optional=True),
        KNOWLEDGE_KEY: ChannelParameter(type=standard_artifacts.Model, optional=True),  # for a KEEP-plugged model
    }
    OUTPUTS = {
        EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation),
        BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
    }


class ModelEvaluator(base_component.BaseComponent):
    """Scores `model` on the raw test split of `examples` (the last day); blesses it or not.

    Args:
      examples: ExampleGen's raw examples (the SavedModel takes raw tf.Examples).
      model: a Trainer's (or SamdTrainer's) model.
      model_name: the TF Serving model name it is pushed as.
      scenario_table: RawDataCheck's `scenarios` (the scenarios' roles, for the group means).
      serving_dir: the serving root; a pushed version there is the regression reference.
      blessing_config: BlessingConfig fields (metric, margin, tolerance).
      baseline_evaluation: another model's evaluation to beat instead of chance.
      floor: the floor model's name: that model is blessed whenever its metric can be computed.
      floor_evaluation: the floor's evaluation (with its per-row predictions): every served model
        is refused when below it on the same rows (paired); without it, a named floor is not checked.
      knowledge: the KnowledgeCenter's cache, for a model with a `knowledge` input.
      scenarios: score only these scenarios' rows (e.g. KEEP's downstream model).
    """

    SPEC_CLASS = ModelEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, examples, model, model_name: str, scenario_table, serving_dir: str,
                 blessing_config=None, baseline_evaluation=None, knowledge=None, scenarios=None, floor=None,
                 floor_evaluation=None):
        super().__init__(spec=ModelEvaluatorSpec(
            examples=examples, model=model, scenario_table=scenario_table, baseline_evaluation=baseline_evaluation,
            knowledge=knowledge, floor=floor, floor_evaluation=floor_evaluation,
            scenarios=json.dumps(list(scenarios)) if scenarios else None, model_name=model_name,
            serving_dir=serving_dir, blessing_config=json.dumps(blessing_config or {}),
            evaluation=tfx_types.Channel(type=standard_artifacts.ModelEvaluation),
            blessing=tfx_types.Channel(type=standard_artifacts.ModelBlessing)))
