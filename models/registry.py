"""The model registry: the one place a trained and served model is named.

An entry says what a name builds (its Keras model and config classes), which trainer
trains it, what its SavedModel answers (signatures and their outputs), and what the
pipeline wires after it. The pipeline options, the pipeline builder, the trainers, the
evaluation report and the benches read it; adding a model is one `register` call plus
its module.

Roles, the wiring the pipeline builder gives an entry:
    general     KEEP's general model: always trained; the SAMD teacher, the plug-in's source
    samd        SAMD's students, pushed one TF Serving model per scenario (`samd_<scenario>`)
    downstream  KEEP stage two's downstream model (its own component, after the knowledge cache)
    unified     a unified multi-scenario model or baseline: trained by the generic Keras
                trainer with the equal budget, evaluated and pushed as one model

Example (a model of one's own; `MyModel(config, vocab_sizes)` returns click, conversion
and cart probabilities and `<task>_logit`s, as `models.multitask.MultiTaskSteps` expects):
    registry.register(registry.ModelEntry(
        name="my_model", role="unified", model="my_package.my_model.MyModel",
        config="my_package.my_model.MyConfig"))
"""

import dataclasses
import importlib
from typing import Dict, Literal, Optional, Tuple

from models.configs import FromDict, check_search_space

PREDICTIONS = ("click", "conversion", "cart")  # the tasks' probabilities every model serves
Signatures = Tuple[Tuple[str, Tuple[str, ...]], ...]  # ((signature, its outputs), ...): hashable, JSON-able


def load(path: str):
    """The object a "module.Name" path names."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@dataclasses.dataclass(frozen=True)
class ModelEntry(FromDict):
    """One model. `model(config, vocab_sizes)` builds it; `config` is a `models.configs.FromDict` dataclass.

    `title` names its pipeline nodes (<title>Trainer, <title>Evaluator, <title>Pusher); by
    default the name in CamelCase. `keras_copy`: the trainer also saves the Keras model beside
    the SavedModel (SAMD rebuilds its teacher from it)."""

    name: str
    role: Literal["general", "samd", "downstream", "unified"]
    model: Optional[str] = None
    config: Optional[str] = None
    signatures: Signatures = (("serving_default", PREDICTIONS),)
    title: str = ""
    keras_copy: bool = False

    def __post_init__(self):
        if not self.title:
            object.__setattr__(self, "title", "".join(p.capitalize() for p in self.name.split("_")))
        if self.role in ("general", "unified") and not (self.model and self.config):
            raise ValueError(f"model {self.name!r}: a {self.role} model names its `model` and `config` classes")

    def make_config(self, overrides: Optional[Dict]):
        """The model's config with the fields `overrides` (ConfigError names a bad one)."""
        return load(self.config).from_dict(overrides or {}, f"{self.name} config")

    def build(self, overrides: Optional[Dict], vocab_sizes: Dict[str, int]):
        """(the Keras model, its config) with the config's fields `overrides` (ConfigError names a bad one)."""
        config = self.make_config(overrides)
        return load(self.model)(config, vocab_sizes), config

    def search_space(self) -> Dict:
        """{config field: models.configs.LogRange or Choice}: what the Tuner searches (trainers/tuner.py), the
        model class's SEARCH_SPACE, checked against the config (each default inside its range)."""
        space = getattr(load(self.model), "SEARCH_SPACE", None) if self.model else None
        if not space:
            raise ValueError(f"model {self.name!r} declares no SEARCH_SPACE: it cannot be tuned")
        check_search_space(load(self.config), space, f"model {self.name!r} SEARCH_SPACE")
        return dict(space)

    @property
    def outputs(self) -> Dict[str, Tuple[str, ...]]:
        """{signature: its outputs}, as models.export.export_saved_model takes them."""
        return {name: tuple(outputs) for name, outputs in self.signatures}


_MODELS: Dict[str, ModelEntry] = {}


def register(entry: ModelEntry, replace: bool = False) -> ModelEntry:
    """Adds `entry` (after the others: the report's columns follow this order)."""
    if entry.name in _MODELS and not replace:
        raise ValueError(f"model {entry.name!r} is already registered")
    _MODELS[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    _MODELS.pop(name, None)


def get(name: str) -> ModelEntry:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; registered: {sorted(_MODELS)}")
    return _MODELS[name]


def names(role: Optional[str] = None) -> Tuple[str, ...]:
    """The registered models (of one role), in registration order."""
    return tuple(n for n, e in _MODELS.items() if role is None or e.role == role)


def with_role(role: str) -> ModelEntry:
    """The one model of a role that has one (general, samd, downstream)."""
    (name,) = names(role)
    return _MODELS[name]


register(ModelEntry("keep_general", "general", "models.keep.KeepModel", "models.keep.KeepConfig",
                    signatures=(("serving_default", PREDICTIONS), ("knowledge", ("knowledge",))),
                    title="Keep", keras_copy=True))
register(ModelEntry("samd", "samd", title="Samd"))
register(ModelEntry("pepnet", "unified", "models.pepnet.PEPNetModel", "models.pepnet.PEPNetConfig"))
register(ModelEntry("adl", "unified", "models.adl.AdlModel", "models.adl.ADLConfig",
                    # which cluster each example is routed to, for the report
                    signatures=(("serving_default", PREDICTIONS), ("routing", ("cluster",)))))
register(ModelEntry("grec", "unified", "models.grec.GRecModel", "models.grec.GRecConfig"))
register(ModelEntry("shared_bottom", "unified", "models.baselines.SharedBottomModel", "models.baselines.BaselineConfig"))
register(ModelEntry("mmoe", "unified", "models.baselines.MMoEModel", "models.baselines.BaselineConfig"))
register(ModelEntry("logistic_regression", "unified", "models.linear.LogisticRegressionModel",
                    "models.linear.LinearConfig"))
register(ModelEntry("keep_downstream", "downstream", title="Downstream"))
KNOWLEDGE_MODEL = "keep_knowledge"  # KEEP's knowledge cache, served for the downstream model's lookups
SAMD_TEACHER = "samd_teacher"  # the super scenario's KEEP model (SAMD's teacher option `super`); not served
