"""SamdTrainer: distils the KEEP teacher into one student per scenario (models/samd.py), in one run.

A component of its own, not TFX's Trainer: it needs the scenario similarity
artifact as an input, and it outputs N SavedModels (one per scenario) under
`<model>/Format-Serving/<scenario_id>/`, which SamdPusher pushes as N models.
"""

import json

from tfx import types as tfx_types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import component_spec, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.types.standard_component_specs import CUSTOM_CONFIG_KEY, EXAMPLES_KEY, MODEL_KEY, TRANSFORM_GRAPH_KEY

from components import artifacts
from components.keys import (EVAL_STEPS_KEY, SCENARIO_TABLE_KEY, SIMILARITY_KEY, TEACHER_KEY, TRAIN_STEPS_KEY,
                             TRANSFER_REPORT_KEY)
from components.samd_trainer import executor
from components.scenario_similarity.component import ScenarioSimilarityArtifact


class SamdTrainerSpec(component_spec.ComponentSpec):
    PARAMETERS = {
        TRAIN_STEPS_KEY: ExecutionParameter(type=int),
        EVAL_STEPS_KEY: ExecutionParameter(type=int),
        CUSTOM_CONFIG_KEY: ExecutionParameter(type=str, optional=True),  # JSON
    }
    INPUTS = {
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),  # transformed
        TRANSFORM_GRAPH_KEY: ChannelParameter(type=standard_artifacts.TransformGraph),
        SCENARIO_TABLE_KEY: ChannelParameter(type=artifacts.ScenarioTable),  # RawDataCheck's `scenarios`
        TEACHER_KEY: ChannelParameter(type=standard_artifacts.Model),  # KEEP trainer's model
        SIMILARITY_KEY: ChannelParameter(type=ScenarioSimilarityArtifact, optional=True),
    }
    OUTPUTS = {
        MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        TRANSFER_REPORT_KEY: ChannelParameter(type=artifacts.TransferReport),
    }


class SamdTrainer(base_component.BaseComponent):
    SPEC_CLASS = SamdTrainerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, examples, transform_graph, teacher, scenario_table, train_steps: int, eval_steps: int,
                 similarity=None, custom_config=None):
        super().__init__(
            spec=SamdTrainerSpec(
                examples=examples,
                transform_graph=transform_graph,
                teacher=teacher,
                similarity=similarity,
                scenario_table=scenario_table,
                train_steps=int(train_steps),
                eval_steps=int(eval_steps),
                custom_config=json.dumps(custom_config or {}),
                model=tfx_types.Channel(type=standard_artifacts.Model),
                transfer_report=tfx_types.Channel(type=artifacts.TransferReport),
            )
        )
