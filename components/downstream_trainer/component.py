"""DownstreamTrainer: KEEP's downstream model of the sub-scenarios, plugged with the GKC's knowledge.

A component of its own rather than TFX's Trainer because it takes the knowledge
cache as an input; otherwise it follows the Trainer's contract: `base_model` (from
a LatestBlessedModelStrategy resolver, i.e. the last pushed downstream model) is
warm-started from, `model` holds the SavedModel under Format-Serving. Work:
trainers/downstream.py.
"""

import json

from tfx import types as tfx_types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import component_spec, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.types.standard_component_specs import (BASE_MODEL_KEY, CUSTOM_CONFIG_KEY, EXAMPLES_KEY, MODEL_KEY,
                                                TRANSFORM_GRAPH_KEY)

from components import artifacts
from components.keys import KNOWLEDGE_KEY, SCENARIO_TABLE_KEY, TRAIN_STEPS_KEY
from components.downstream_trainer import executor


class DownstreamTrainerSpec(component_spec.ComponentSpec):
    PARAMETERS = {
        TRAIN_STEPS_KEY: ExecutionParameter(type=int),
        CUSTOM_CONFIG_KEY: ExecutionParameter(type=str, optional=True),  # JSON (trainers/config.py: DownstreamTrainerConfig)
    }
    INPUTS = {
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),  # transformed
        TRANSFORM_GRAPH_KEY: ChannelParameter(type=standard_artifacts.TransformGraph),
        SCENARIO_TABLE_KEY: ChannelParameter(type=artifacts.ScenarioTable),  # RawDataCheck's `scenarios`
        KNOWLEDGE_KEY: ChannelParameter(type=standard_artifacts.Model, optional=True),  # KnowledgeCenter's cache
        BASE_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model, optional=True),  # warm start
    }
    OUTPUTS = {MODEL_KEY: ChannelParameter(type=standard_artifacts.Model)}


class DownstreamTrainer(base_component.BaseComponent):
    SPEC_CLASS = DownstreamTrainerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, examples, transform_graph, scenario_table, train_steps: int, knowledge=None, base_model=None,
                 custom_config=None):
        super().__init__(spec=DownstreamTrainerSpec(
            examples=examples, transform_graph=transform_graph, knowledge=knowledge, base_model=base_model,
            scenario_table=scenario_table, train_steps=int(train_steps), custom_config=json.dumps(custom_config or {}),
            model=tfx_types.Channel(type=standard_artifacts.Model)))
