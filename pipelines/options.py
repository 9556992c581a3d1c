"""Options of the keep_samd pipeline: one typed, nested, frozen configuration, validated once when built.

`tfx run create` runs pipelines/local_runner.py without arguments, so the local
runner reads its options from environment variables (all optional): a scalar one
(KEEP_SAMD_TRAIN_STEPS=600) or a JSON object of a section's fields
(KEEP_SAMD_SAMD='{"teacher": "super"}'). Each option's type, default and meaning is
declared once, below; docs/options.md's table is generated from it
(`python -m pipelines.options` prints it; tests/pipelines/test_options.py checks the
table against it).

Building PipelineOptions (`from_env`, or directly with dicts for the sections, as
bench/quality.py does) checks every option: an unknown key, a value of the wrong type
or outside the allowed ones, a model config override its config rejects, a blessing
baseline that is not trained, raise OptionsError naming the variable and field, the
value and what is allowed. Nothing invalid reaches a component.
"""

import dataclasses
import json
import os
import shlex
import typing
from typing import Any, Dict, Literal, Optional, Sequence, Tuple

from components.model_evaluator.blessing import BlessingConfig
from components.time_split_example_gen.split import TimeSplit
from models import registry
from models.configs import ConfigError, FromDict, check_overrides, convert_field, convert_fields, describe
from trainers.config import (CORRUPTIONS, DownstreamTrainerConfig, KerasTrainerConfig, KerasTunerConfig,
                             KnowledgeCenterConfig, SamdTrainerConfig)

PIPELINE_NAME = "keep_samd"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_FILE = os.path.join(REPO_ROOT, "schemas", "schema.pbtxt")
DEFAULT_BEAM_ARGS = ("--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=0")
RAW_PATTERN = "day=*/*.csv"  # impression logs under the data root
EXAMPLE_GEN_ID = "CsvExampleGen"  # the node id of the pipeline's ExampleGen (a TimeSplitExampleGen)


class OptionsError(ValueError):
    """A pipeline option the user gave is invalid (the message names the option and the value)."""


def example_gen(data_root: str, time_split: Optional[Dict] = None, schema_file: str = SCHEMA_FILE):
    """The pipeline's ExampleGen: every day=N/*.csv, typed by `schema_file`, split train / validation / test by
    day (TimeSplit)."""
    from components.time_split_example_gen import TimeSplitExampleGen

    return TimeSplitExampleGen(input_base=data_root, pattern=RAW_PATTERN, schema_file=schema_file,
                               time_split=time_split).with_id(EXAMPLE_GEN_ID)


def option(default=dataclasses.MISSING, *, doc: str, **metadata):
    """A dataclass field and its row in docs/options.md: `doc`; metadata `shown` (the default as the table
    shows it, where it is not a plain value), `env` (its environment variable), `docs` ({field:
    doc} of a section whose class lies elsewhere), and the loader's `minimum` and `overrides`
    (models/configs.py). `dict` as the default: an empty object."""
    metadata = {"doc": doc, **metadata}
    if default is dict:
        return dataclasses.field(default_factory=dict, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class SamdOptions(FromDict):
    enabled: bool = option(True, doc="train SAMD's students (ScenarioSimilarity, SamdTrainer, its evaluator and pusher)")
    teacher: Literal["general", "super"] = option(
        "general", doc="the frozen teacher: the served KEEP model, trained on every scenario, or `super`: a KEEP "
                       "model of the super scenario's rows only (SamdTeacherTrainer), as SAMD's paper does")
    samd: Dict[str, Any] = option(dict, overrides="models.samd.SamdConfig", doc="`models.samd.SamdConfig` overrides")
    students: Dict[str, Dict[str, Any]] = option(
        dict, doc="{scenario: `models.students.StudentSpec` overrides}")
    scenarios: Optional[Tuple[str, ...]] = option(None, shown="every scenario",
                                                  doc="train the students of these scenarios only")
    train_steps: Optional[int] = option(None, minimum=1, shown="`KEEP_SAMD_TRAIN_STEPS`", doc="SamdTrainer steps")
    epochs: Optional[int] = option(None, minimum=1, shown="`KEEP_SAMD_EPOCHS`",
                                   doc="SamdTrainer's epoch cap (a pass: every training row once on average)")


@dataclasses.dataclass(frozen=True)
class UnifiedOptions(FromDict):
    models: Optional[Tuple[str, ...]] = option(None, shown="every `unified` model of `models.registry`",
                                               doc="the unified models and baselines trained")
    configs: Dict[str, Dict[str, Any]] = option(dict, doc="{model: overrides of its config dataclass}")
    train_steps: Optional[int] = option(None, minimum=1, shown="`KEEP_SAMD_TRAIN_STEPS`", doc="each one's steps")
    batch_size: Optional[int] = option(None, minimum=1, shown="each model's config",
                                       doc="one batch for every one (a `configs` batch_size wins); by default each "
                                           "model's own: the epoch rule, not the batch, makes budgets equal")
    corrupt_labels: Dict[str, str] = option(
        dict, doc='{model: "shuffle" | "invert"}: a planted worse model, trained on corrupted labels (it must not '
                  'be blessed)')


@dataclasses.dataclass(frozen=True)
class TunerOptions(FromDict):
    enabled: bool = option(False, doc="a TFX Tuner before each Keras model's Trainer (KEEP's and the unified models'): "
                                      "a random search of the model's `SEARCH_SPACE`, each trial trained by the "
                                      "Trainer's rule and scored on the validation day; the Trainer trains with the "
                                      "best trial's values ([models](models.md#tuning))")
    max_trials: int = option(8, minimum=1, doc="trials per model, the same for every model (the first: the config's "
                                               "defaults)")
    models: Optional[Tuple[str, ...]] = option(None, shown="every trained Keras model",
                                               doc="tune these only: `keep_general` and unified models")


@dataclasses.dataclass(frozen=True)
class DownstreamOptions(FromDict):
    enabled: bool = option(True, doc="run KEEP stage two: KnowledgeCenter, KnowledgePusher, DownstreamTrainer")
    plugged: bool = option(True, doc="the downstream model reads the knowledge cache (false: the plain model)")
    spans: int = option(0, minimum=0, doc="n > 0: incremental, the downstream model trains on the latest n days and "
                                          "warm-starts from the last pushed one; 0: every day")
    knowledge: Dict[str, Any] = option(dict, overrides="models.keep_cache.CacheableKnowledgeConfig",
                                       doc="`models.keep_cache.CacheableKnowledgeConfig` overrides")
    downstream: Dict[str, Any] = option(dict, overrides="models.keep_plugin.DownstreamConfig",
                                        doc="`models.keep_plugin.DownstreamConfig` overrides")
    scenarios: Optional[Tuple[str, ...]] = option(None, shown="all but the super scenario",
                                                  doc="the sub-scenarios of the downstream model")
    train_steps: Optional[int] = option(None, minimum=1, shown="`KEEP_SAMD_TRAIN_STEPS`",
                                        doc="DownstreamTrainer steps")
    knowledge_train_steps: Optional[int] = option(None, minimum=1, shown="`train_steps` above",
                                                  doc="KnowledgeCenter steps")
    epochs: Optional[int] = option(None, minimum=1, shown="`KEEP_SAMD_EPOCHS`",
                                   doc="the epoch cap of both stage-two trainers (the knowledge heads and the "
                                       "downstream model)")


@dataclasses.dataclass(frozen=True)
class BlessingOptions(FromDict):
    # None: BlessingConfig's default (components/model_evaluator/blessing.py), shown in docs/options.md.
    metric: Optional[str] = option(None, shown=f"`{json.dumps(BlessingConfig.metric)}`",
                                   doc="<auc|gauc>_<click|conversion|cart> on the model's slice")
    margin: Optional[float] = option(None, shown=f"`{json.dumps(BlessingConfig.margin)}`",
                                     doc="by how much a model must beat its baseline")
    tolerance: Optional[float] = option(None, shown=f"`{json.dumps(BlessingConfig.tolerance)}`",
                                        doc="how far below the pushed version of the same model it may score")
    baselines: Dict[str, str] = option(dict, doc="{model: the trained model it must beat} (default baseline: chance)")
    models: Dict[str, Dict[str, Any]] = option(dict, doc="{model: metric / margin / tolerance / floor (false: not "
                                                         "compared with the floor) for that model}")
    floor: Optional[str] = option(
        "logistic_regression", doc="the floor: any other model (a SAMD student on its scenario's rows) is refused "
                                   "when its metric is below the floor's on the same test rows, the paired 95% "
                                   "interval of the difference entirely below 0; the floor itself is blessed whenever "
                                   "its metric can be computed (the fallback). Not checked when not trained in the "
                                   "run; null: off")

    def config_of(self, model: str) -> Dict:
        """The blessing rule's fields given for one model: the section's, then its `models` entry."""
        given = {f: getattr(self, f) for f in ("metric", "margin", "tolerance") if getattr(self, f) is not None}
        return {**given, **self.models.get(model, {})}


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    output_dir: str = option(os.path.join(os.getcwd(), "runs"), env="KEEP_SAMD_OUTPUT", shown="`./runs`",
                             doc="output folder: pipeline root, ML Metadata, pushed models")
    data_root: str = option(os.path.join(os.getcwd(), "data", "default"), env="KEEP_SAMD_DATA",
                            shown="`./data/default`", doc="raw data folder with day=N/*.csv and scenarios.csv")
    beam_pipeline_args: Tuple[str, ...] = option(
        DEFAULT_BEAM_ARGS, env="KEEP_SAMD_BEAM_ARGS", shown=f"`{' '.join(DEFAULT_BEAM_ARGS)}`",
        doc="Beam pipeline args, space-separated (the default: DirectRunner, one worker per core)")
    time_split: TimeSplit = option(
        TimeSplit(), env="KEEP_SAMD_SPLIT", doc="the time split (components/time_split_example_gen)",
        docs={"test_days": "test: the last days", "validation_days": "validation: the days before them (0: a hash "
              "slice of the training days instead)", "validation_percent": "the hash slice's share of the rows"})
    seed: int = option(0, minimum=0, env="KEEP_SAMD_SEED", doc="every trainer's random seed: initialisation, shuffling")
    cache: bool = option(True, env="KEEP_SAMD_CACHE",
                         doc="reuse a component's earlier result when its inputs and options are unchanged (TFX "
                             "caching: a failed or killed run, started again, resumes); 0 reruns everything, e.g. "
                             "after changing the code")
    train_steps: int = option(1_000_000, minimum=1, env="KEEP_SAMD_TRAIN_STEPS",
                              doc="each Trainer's steps, at most: a safety cap; the epoch cap and early stopping "
                                  "end training first (a pass over the train rows is an epoch, whatever the data's "
                                  "size)")
    eval_steps: int = option(100, minimum=1, env="KEEP_SAMD_EVAL_STEPS",
                             doc="validation steps after each epoch (its batches: enough rows that the early stop "
                                 "reads a trend, not noise)")
    epochs: int = option(20, minimum=1, env="KEEP_SAMD_EPOCHS",
                         doc="every trainer's cap: at most this many epochs, each one pass over its train rows (less "
                             "when the train steps run out first) ending with a validation pass; one cap for all, so "
                             "an equal budget is an equal chance to converge")
    patience: int = option(2, minimum=1, env="KEEP_SAMD_PATIENCE",
                           doc="every trainer stops after this many epochs without a better validation score, "
                               "keeping the best epoch's weights")
    keep: Dict[str, Any] = option(dict, env="KEEP_SAMD_KEEP", overrides="models.keep.KeepConfig",
                                  doc="`models.keep.KeepConfig` overrides, e.g. `{\"batch_size\": 256}`")
    samd: SamdOptions = option(SamdOptions(), env="KEEP_SAMD_SAMD", doc="the SAMD run")
    unified: UnifiedOptions = option(UnifiedOptions(), env="KEEP_SAMD_UNIFIED", doc="the unified models and baselines")
    tuner: TunerOptions = option(TunerOptions(), env="KEEP_SAMD_TUNER",
                                 doc="hyperparameter search before training (off by default)")
    downstream: DownstreamOptions = option(DownstreamOptions(), env="KEEP_SAMD_DOWNSTREAM",
                                           doc="KEEP stage two: the General Knowledge Center and the downstream model "
                                               "of the sub-scenarios")
    blessing: BlessingOptions = option(BlessingOptions(), env="KEEP_SAMD_BLESSING", doc="the evaluators' blessing rule")
    similarity_alpha: float = option(1.0, doc="ScenarioSimilarity's alpha (Python only)")
    schema_file: str = option(SCHEMA_FILE, shown="`schemas/schema.pbtxt`", doc="the schema (Python only)")

    def __post_init__(self):
        hints = typing.get_type_hints(PipelineOptions)
        for f in dataclasses.fields(self):
            where = f.metadata.get("env", f.name)
            try:
                value = convert_field(f, hints[f.name], getattr(self, f.name), where)
            except ConfigError as e:
                raise OptionsError(str(e)) from None
            except ValueError as e:  # a section's own check, e.g. TimeSplit's
                raise OptionsError(f"{where}: {e}") from None
            object.__setattr__(self, f.name, value)
        self._check_models()
        self._check_tuner()
        self._check_blessing()

    def _check_models(self):
        unified = self.unified
        if unified.models is not None or unified.configs or unified.corrupt_labels:
            known = registry.names("unified")
            for field, names in (("models", unified.models or ()), ("configs", unified.configs)):
                unknown = sorted(set(names) - set(known))
                if unknown:
                    raise OptionsError(f"KEEP_SAMD_UNIFIED.{field}: unknown model(s) {unknown}; known: {sorted(known)}")
            try:
                for name, overrides in unified.configs.items():
                    check_overrides(registry.get(name).config, overrides, f"KEEP_SAMD_UNIFIED.configs.{name}")
            except ConfigError as e:
                raise OptionsError(str(e)) from None
            for name, corruption in unified.corrupt_labels.items():
                if name not in self.unified_models or corruption not in CORRUPTIONS:
                    raise OptionsError(f"KEEP_SAMD_UNIFIED.corrupt_labels: {name!r}: {corruption!r}: expected "
                                       f"{{a trained unified model {list(self.unified_models)}: one of "
                                       f"{sorted(CORRUPTIONS)}}}")
        if self.samd.students:
            from models.students import StudentSpec  # TensorFlow

            # Checked field by field: a student's scenario is only known from the data, at run time.
            for scenario, fields in self.samd.students.items():
                try:
                    convert_fields(StudentSpec, fields, f"KEEP_SAMD_SAMD.students.{scenario}")
                except ConfigError as e:
                    raise OptionsError(str(e)) from None

    def _check_tuner(self):
        if self.tuner.models is not None:
            keras = self.keras_models
            wrong = [m for m in self.tuner.models if m not in keras]
            if wrong:
                raise OptionsError(f"KEEP_SAMD_TUNER.models: {wrong}: expected Keras models this run trains "
                                   f"({list(keras)})")
        for name in self.tuned_models:  # imports the models' modules (TensorFlow): only with the Tuner on
            try:
                registry.get(name).search_space()
            except ValueError as e:
                raise OptionsError(f"KEEP_SAMD_TUNER: {e}") from None

    def _check_blessing(self):
        blessing = self.blessing
        if blessing.models:
            known = registry.names()
            unknown = sorted(set(blessing.models) - set(known))
            if unknown:
                raise OptionsError(f"KEEP_SAMD_BLESSING.models: unknown model(s) {unknown}; known: {sorted(known)}")
        for model in (None, *blessing.models):
            try:
                BlessingConfig.from_dict(blessing.config_of(model), f"KEEP_SAMD_BLESSING.models.{model}" if model
                                         else "KEEP_SAMD_BLESSING")
            except ConfigError as e:
                raise OptionsError(str(e)) from None
            except ValueError as e:
                raise OptionsError(f"KEEP_SAMD_BLESSING for {model or 'every model'}: {e}") from None
        if blessing.floor is not None:
            allowed = [n for n in registry.names() if registry.get(n).role in ("general", "unified")]
            if blessing.floor not in allowed:  # the floor must have scored every row a model is judged on
                raise OptionsError(f"KEEP_SAMD_BLESSING.floor={blessing.floor!r}: expected null or a model trained "
                                   f"on every scenario, one of {allowed}")
            if blessing.floor in blessing.baselines:
                raise OptionsError(f"KEEP_SAMD_BLESSING.baselines: {blessing.floor!r} is the floor "
                                   "(KEEP_SAMD_BLESSING.floor), blessed on its own: it takes no baseline")
        if blessing.baselines:
            trained = self.trained_models
            for model, base in blessing.baselines.items():
                if model not in trained or base not in trained or model == base:
                    raise OptionsError(f"KEEP_SAMD_BLESSING baselines: {model!r} -> {base!r}: both must be trained "
                                       f"models of this run ({sorted(trained)}), and differ")
            self.evaluation_order(trained)  # raises on a cycle

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.output_dir, "pipelines", PIPELINE_NAME)

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output_dir, "metadata", PIPELINE_NAME, "metadata.sqlite")

    @property
    def serving_dir(self) -> str:
        return os.path.join(self.output_dir, "serving")

    def serving_model_dir(self, model_name: str) -> str:
        return os.path.join(self.serving_dir, model_name)

    @property
    def unified_models(self) -> Tuple[str, ...]:
        return registry.names("unified") if self.unified.models is None else self.unified.models

    @property
    def keras_models(self) -> Tuple[str, ...]:
        """The models this run trains with the generic Keras Trainer: KEEP's general model, the unified ones."""
        return registry.names("general") + self.unified_models

    @property
    def tuned_models(self) -> Tuple[str, ...]:
        """The models whose Trainer gets a Tuner (none unless KEEP_SAMD_TUNER is enabled)."""
        if not self.tuner.enabled:
            return ()
        return self.keras_models if self.tuner.models is None else self.tuner.models

    @property
    def trained_models(self) -> Tuple[str, ...]:
        """The models this run trains, evaluates and (when blessed) pushes, in the pipeline's order."""
        enabled = {"general": True, "samd": self.samd.enabled, "downstream": self.downstream.enabled}
        return (tuple(n for role, on in enabled.items() if on for n in registry.names(role))
                + self.unified_models)

    def _trainer_fields(self, model_name: str, epochs: int) -> Dict:
        return {"model_name": model_name, "seed": self.seed, "epochs": epochs, "patience": self.patience}

    def keras_trainer_config(self, name: str, model_name: Optional[str] = None, roles=None) -> KerasTrainerConfig:
        """The generic trainer's config (trainers/generic.py) for the registered model `name`: KEEP's general
        model (as `model_name`, on the rows of `roles` only when given) or a unified model, with the equal
        budget's batch."""
        entry = registry.get(name)
        if entry.role == "unified":
            return KerasTrainerConfig(
                **self._trainer_fields(name, self.epochs), model=entry, config=self.unified.configs.get(name, {}),
                batch_size=self.unified.batch_size, corrupt_labels=self.unified.corrupt_labels.get(name))
        return KerasTrainerConfig(**self._trainer_fields(model_name or name, self.epochs), model=entry,
                                  config=self.keep, roles=tuple(roles) if roles else None)

    def keras_tuner_config(self, name: str) -> KerasTunerConfig:
        """The Tuner's config (trainers/tuner.py) of the registered model `name`: its Trainer's, and the trials."""
        trainer = self.keras_trainer_config(name)
        return KerasTunerConfig(**{f.name: getattr(trainer, f.name) for f in dataclasses.fields(trainer)},
                                max_trials=self.tuner.max_trials)

    def samd_trainer_config(self) -> SamdTrainerConfig:
        return SamdTrainerConfig(**self._trainer_fields(registry.with_role("samd").name, self.epochs_of(self.samd)),
                                 samd=self.samd.samd, students=self.samd.students, scenarios=self.samd.scenarios)

    def downstream_trainer_config(self) -> DownstreamTrainerConfig:
        d = self.downstream
        return DownstreamTrainerConfig(**self._trainer_fields(registry.with_role("downstream").name,
                                                              self.epochs_of(d)),
                                       plugged=d.plugged, spans=d.spans, downstream=d.downstream,
                                       scenarios=d.scenarios)

    def knowledge_center_config(self) -> KnowledgeCenterConfig:
        return KnowledgeCenterConfig(**self._trainer_fields(registry.KNOWLEDGE_MODEL, self.epochs_of(self.downstream)),
                                     knowledge=self.downstream.knowledge)

    def epochs_of(self, section) -> int:
        """A section's epoch cap: its own, else KEEP_SAMD_EPOCHS."""
        return self.epochs if section.epochs is None else section.epochs

    def train_steps_of(self, section) -> int:
        """A section's train steps: its own, else KEEP_SAMD_TRAIN_STEPS."""
        return self.train_steps if section.train_steps is None else section.train_steps

    @property
    def knowledge_train_steps(self) -> int:
        steps = self.downstream.knowledge_train_steps
        return self.train_steps_of(self.downstream) if steps is None else steps

    def blessing_config(self, model: str) -> Dict:
        """The blessing rule's fields given for one model (BlessingConfig's defaults for the rest)."""
        return self.blessing.config_of(model)

    @property
    def blessing_baselines(self) -> Dict[str, str]:
        """{model: the model it must beat}; a baseline is a trained model of this run."""
        return dict(self.blessing.baselines)

    def blessing_floor(self, model: str) -> Optional[str]:
        """The floor `model` is compared with: None when this run does not train it, or not for this model."""
        floor = self.blessing.floor if self.blessing.floor in self.trained_models else None
        return floor if floor != model and BlessingConfig.from_dict(self.blessing_config(model)).floor else None

    def evaluation_order(self, models: Sequence[str]) -> Tuple[str, ...]:
        """`models` ordered so that each model's baseline, and the floor, are evaluated before it."""
        def waits_for(m):
            floor = self.blessing_floor(m)
            return {self.blessing.baselines.get(m), floor if floor in models else None} - {None}

        pending, done = list(models), []
        while pending:
            ready = [m for m in pending if waits_for(m) <= set(done)]
            if not ready:
                raise OptionsError(f"KEEP_SAMD_BLESSING baselines form a cycle among {pending}")
            done += ready
            pending = [m for m in pending if m not in ready]
        return tuple(done)

    @classmethod
    def from_env(cls, env: Optional[Dict[str, str]] = None) -> "PipelineOptions":
        env = os.environ if env is None else env
        hints = typing.get_type_hints(cls)
        kw = {}
        for f in dataclasses.fields(cls):
            name = f.metadata.get("env")
            if name and env.get(name):
                kw[f.name] = _parse_env(name, env[name], hints[f.name])
        return cls(**kw)


def _parse_env(name: str, text: str, hint):
    """An environment variable's text as the field's raw value (PipelineOptions checks it)."""
    if hint is int:
        try:
            return int(text)
        except ValueError:
            raise OptionsError(f"{name}={text!r}: expected integer") from None
    if hint is bool:
        flags = {"1": True, "true": True, "0": False, "false": False}
        if text.strip().lower() not in flags:
            raise OptionsError(f"{name}={text!r}: expected one of 1, 0, true, false")
        return flags[text.strip().lower()]
    if hint is str:  # the folders: a local one made absolute, a URI (gs://...) as given
        return text if "://" in text else os.path.abspath(text)
    if hint == Tuple[str, ...]:
        return tuple(shlex.split(text))
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise OptionsError(f"{name}={text!r}: not JSON ({e}); expected a JSON object") from None
    if not isinstance(value, dict):
        raise OptionsError(f"{name}={text!r}: expected a JSON object")
    return value


def option_rows(cls=None, prefix: str = "", docs: Optional[Dict[str, str]] = None):
    """(option, type, default, meaning) of every option, a section's fields after the section."""
    cls = cls or PipelineOptions
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        name = f.metadata.get("env") or (f"{prefix}.{f.name}" if prefix else f.name)
        section = dataclasses.is_dataclass(hint)
        if "shown" in f.metadata:
            default = f.metadata["shown"]
        elif section:
            default = ""
        else:
            value = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
            default = f"`{json.dumps(value)}`"
        doc = f.metadata["doc"] if "doc" in f.metadata else (docs or {})[f.name]
        yield name, "JSON object of the fields below" if section else describe(hint), default, doc
        if section:
            yield from option_rows(hint, name, f.metadata.get("docs"))


def options_table() -> str:
    """docs/options.md's options table (markdown)."""
    rows = [("Option", "Type", "Default", "Meaning"), ("---",) * 4]
    rows += [(f"`{name}`", kind, default, doc) for name, kind, default, doc in option_rows()]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows)


if __name__ == "__main__":
    print(options_table())
