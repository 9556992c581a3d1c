"""The typed trainer configs: what each trainer takes, built by pipelines/options.py.

A component carries one of these as its `custom_config` (`as_custom_config`: plain JSON);
the trainer reads it back with one `from_custom_config`, so a misspelt or ill-typed field
fails at the trainer's first line, naming the field. The fields have no defaults where
the pipeline options hold one (seed, epochs, patience, batch size): every default lives
in exactly one place, the options, and is documented in their generated table.

No TensorFlow here: the options import this module.
"""

import dataclasses
import json
from typing import Any, Dict, Literal, Mapping, Optional, Tuple

from models.configs import FromDict
from models.registry import ModelEntry

CORRUPTIONS = ("shuffle", "invert")  # trainers/generic.py's planted worse models
# TFX's Vertex AI trainer keeps its job settings in the Trainer's custom_config and hands the
# replicas the same custom_config (tfx.extensions.google_cloud_ai_platform, TFX 1.16.0).
VERTEX_PREFIX = "ai_platform_"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainerConfig(FromDict):
    """Fields of every trainer: the served name, the random seed, and the epochs the train steps are
    spread over, each ending with a validation pass; training stops after `patience` epochs
    without a better validation score, keeping the best epoch's weights."""

    model_name: str
    seed: int = dataclasses.field(metadata={"minimum": 0})
    epochs: int = dataclasses.field(metadata={"minimum": 1})
    patience: int = dataclasses.field(metadata={"minimum": 1})

    def as_custom_config(self) -> Dict[str, Any]:
        """The JSON object a component's custom_config carries."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_custom_config(cls, custom: Optional[Mapping]):
        """The config a component carries; the keys of TFX's Vertex AI trainer (VERTEX_PREFIX) are not ours."""
        ours = {k: v for k, v in (custom or {}).items() if not k.startswith(VERTEX_PREFIX)}
        return cls.from_dict(ours, f"{cls.__name__} (custom_config)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class KerasTrainerConfig(TrainerConfig):
    """trainers/keras.py: KEEP's general model and the unified models.

    `config`: overrides of the model's config dataclass; `batch_size`: the batch (None: the
    model config's); `corrupt_labels`: train on corrupted labels, a control the evaluator must
    not bless; `roles`: train on the rows of the scenarios with these roles only, read from
    `scenarios_csv` (set by components.scenario_trainer); `min_shard_bytes`: which variables
    ParameterServerStrategy shards (None: trainers.distribute.MIN_SHARD_BYTES)."""

    model: ModelEntry
    config: Dict[str, Any] = dataclasses.field(default_factory=dict)
    batch_size: Optional[int] = dataclasses.field(default=None, metadata={"minimum": 1})
    corrupt_labels: Optional[Literal[CORRUPTIONS]] = None
    roles: Optional[Tuple[str, ...]] = None
    scenarios_csv: Optional[str] = None
    min_shard_bytes: Optional[int] = dataclasses.field(default=None, metadata={"minimum": 1})


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamdTrainerConfig(TrainerConfig):
    """trainers/samd.py: `samd` overrides `models.samd.SamdConfig`; `students`: {scenario:
    `models.students.StudentSpec` overrides}; `scenarios`: a subset of the scenarios (None: all)."""

    samd: Dict[str, Any] = dataclasses.field(default_factory=dict)
    students: Dict[str, Dict[str, Any]] = dataclasses.field(default_factory=dict)
    scenarios: Optional[Tuple[str, ...]] = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class DownstreamTrainerConfig(TrainerConfig):
    """trainers/downstream.py: `plugged`: read the knowledge cache; `spans` n > 0: train on the
    latest n days; `downstream` overrides `models.keep_plugin.DownstreamConfig`; `scenarios`: the
    sub-scenarios (None: all but the super scenario)."""

    plugged: bool
    spans: int = dataclasses.field(metadata={"minimum": 0})
    downstream: Dict[str, Any] = dataclasses.field(default_factory=dict)
    scenarios: Optional[Tuple[str, ...]] = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class KnowledgeCenterConfig(TrainerConfig):
    """trainers/knowledge_center.py: `knowledge` overrides `models.keep_cache.CacheableKnowledgeConfig`."""

    knowledge: Dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, kw_only=True)
class KerasTunerConfig(KerasTrainerConfig):
    """trainers/tuner.py: the config of the Trainer whose model it tunes, and the trials of the search
    (`max_trials`: one number for every model)."""

    max_trials: int = dataclasses.field(metadata={"minimum": 1})
