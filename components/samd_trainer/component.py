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

from components import artifacts
from components.samd_trainer import executor
from components.scenario_similarity.component import ScenarioSimilarityArtifact


class SamdTrainerSpec(component_spec.ComponentSpec):
    PARAMETERS = {
        "train_steps": ExecutionParameter(type=int),
        "eval_steps": ExecutionParameter(type=int),
        "custom_config": ExecutionParameter(type=str, optional=True),  # JSON
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),  # transformed
        "transform_graph": ChannelParameter(type=standard_artifacts.TransformGraph),
        "scenario_table": ChannelParameter(type=artifacts.ScenarioTable),  # RawDataCheck's `scenarios`
        "teacher": ChannelParameter(type=standard_artifacts.Model),  # KEEP trainer's model
        "similarity": ChannelParameter(type=ScenarioSimilarityArtifact, optional=True),
    }
    OUTPUTS = {
        "model": ChannelParameter(type=standard_artifacts.Model),
        "transfer_report": ChannelParameter(type=artifacts.TransferReport),
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
