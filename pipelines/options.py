"""Options of the keep_samd pipeline, one frozen dataclass, overridable from the environment.

`tfx run create` runs pipelines/local_runner.py without arguments, so the local
runner reads its options from environment variables (all optional):

    KEEP_SAMD_OUTPUT       output folder: pipeline root, ML Metadata, pushed models (./runs)
    KEEP_SAMD_DATA         raw data folder with day=N/*.csv and scenarios.csv (./data/default)
    KEEP_SAMD_BEAM_ARGS    Beam pipeline args, space-separated
                           (default: DirectRunner, multi-processing, one worker per core)
    KEEP_SAMD_SPLIT        JSON object of the time split (components/time_split_example_gen):
                           {"test_days": 1, "validation_days": 1, "validation_percent": 10}
                           (test = the last day, validation = the day before, train = the rest;
                           validation_days 0: a hash slice of the training days instead)
    KEEP_SAMD_SEED         every trainer's random seed (0): initialisation and shuffling
    KEEP_SAMD_TRAIN_STEPS  Trainer steps, at most (600; early stopping may end sooner)
    KEEP_SAMD_EVAL_STEPS   validation steps after each epoch (20)
    KEEP_SAMD_KEEP         JSON object of KeepConfig overrides, e.g. '{"batch_size": 256}'
    KEEP_SAMD_EPOCHS       epochs the train steps are spread over, each ending with a validation pass (6)
    KEEP_SAMD_SAMD         JSON object for the SAMD run: {"samd": {SamdConfig overrides},
                           "students": {scenario: {StudentSpec overrides}}, "epochs": n,
                           "train_steps": n, "enabled": true,
                           "teacher": "general" (default: the served KEEP model, trained on
                           every scenario) | "super" (a KEEP model trained on the super
                           scenario's rows only, as SAMD's paper does: the SamdTeacherTrainer;
                           on the rich preset its students fell below the same students
                           trained alone on the heterogeneous and minor scenarios, see
                           bench/results/samd.json)}
    KEEP_SAMD_UNIFIED      JSON object for the unified models and baselines:
                           {"models": ["pepnet", "adl", "grec", "shared_bottom", "mmoe",
                           "logistic_regression"],
                           "configs": {model: {config overrides}}, "train_steps": n,
                           "batch_size": n (every one of them, for equal budgets; default
                           models.unified_trainer.BUDGET_BATCH_SIZE),
                           "corrupt_labels": {model: "shuffle" | "invert"}}  (a planted
                           worse model, trained on corrupted labels: it must not be blessed)
    KEEP_SAMD_DOWNSTREAM   JSON object for KEEP stage two (General Knowledge Center and
                           the downstream model of the sub-scenarios):
                           {"enabled": true, "plugged": true, "spans": 0,
                           "knowledge": {CacheableKnowledgeConfig overrides, e.g.
                           "strategy": "both" | "decomposition" | "degeneration"},
                           "downstream": {DownstreamConfig overrides},
                           "scenarios": [sub-scenarios] (default: all but the super one),
                           "train_steps": n, "knowledge_train_steps": n, "epochs": n}.
                           "spans": n > 0 makes the downstream training incremental: it
                           trains on the latest n days and warm-starts from the last
                           pushed downstream model.
    KEEP_SAMD_BLESSING     JSON object for the evaluators' blessing rule:
                           {"metric": "auc_click", "margin": 0.01, "tolerance": 0.01,
                           "baselines": {model: baseline model}, (default baseline: chance)
                           "models": {model: {metric/margin/tolerance for that model}}}
"""

import dataclasses
import json
import os
import shlex
from typing import Dict, Optional, Tuple

PIPELINE_NAME = "keep_samd"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_FILE = os.path.join(REPO_ROOT, "schemas", "schema.pbtxt")
DEFAULT_BEAM_ARGS = ("--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=0")
RAW_PATTERN = "day=*/*.csv"  # impression logs under the data root
EXAMPLE_GEN_ID = "CsvExampleGen"  # the node id of the pipeline's ExampleGen (a TimeSplitExampleGen)


class OptionsError(ValueError):
    """A pipeline option the user gave is invalid (the message names the option and the value)."""


def example_gen(data_root: str, time_split: Optional[Dict] = None):
    """The pipeline's ExampleGen: every day=N/*.csv, split train / validation / test by day (TimeSplit)."""
    from components.time_split_example_gen import TimeSplitExampleGen

    return TimeSplitExampleGen(input_base=data_root, pattern=RAW_PATTERN, time_split=time_split).with_id(EXAMPLE_GEN_ID)


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    output_dir: str = os.path.join(os.getcwd(), "runs")
    data_root: str = os.path.join(os.getcwd(), "data", "default")
    beam_pipeline_args: Tuple[str, ...] = DEFAULT_BEAM_ARGS
    train_steps: int = 600
    eval_steps: int = 20
    epochs: int = 6
    keep: Dict = dataclasses.field(default_factory=dict)  # KeepConfig overrides
    samd: Dict = dataclasses.field(default_factory=dict)  # SAMD run options (see KEEP_SAMD_SAMD)
    unified: Dict = dataclasses.field(default_factory=dict)  # unified models (see KEEP_SAMD_UNIFIED)
    blessing: Dict = dataclasses.field(default_factory=dict)  # blessing rule (see KEEP_SAMD_BLESSING)
    downstream: Dict = dataclasses.field(default_factory=dict)  # KEEP stage two (see KEEP_SAMD_DOWNSTREAM)
    time_split: Dict = dataclasses.field(default_factory=dict)  # TimeSplit overrides (see KEEP_SAMD_SPLIT)
    seed: int = 0  # every trainer's random seed (see KEEP_SAMD_SEED)
    similarity_alpha: float = 1.0
    schema_file: str = SCHEMA_FILE

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.output_dir, "pipelines", PIPELINE_NAME)

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output_dir, "metadata", PIPELINE_NAME, "metadata.sqlite")

    @property
    def serving_dir(self) -> str:
        return os.path.join(self.output_dir, "serving")

    @property
    def samd_enabled(self) -> bool:
        return bool(self.samd.get("enabled", True))

    @property
    def samd_teacher(self) -> str:
        teacher = self.samd.get("teacher", "general")
        if teacher not in ("super", "general"):
            raise OptionsError(f"KEEP_SAMD_SAMD teacher={teacher!r}: 'super' or 'general'")
        return teacher

    @property
    def samd_train_steps(self) -> int:
        return int(self.samd.get("train_steps", self.train_steps))

    @property
    def downstream_enabled(self) -> bool:
        return bool(self.downstream.get("enabled", True))

    @property
    def downstream_spans(self) -> int:
        spans = self.downstream.get("spans", 0)
        if not isinstance(spans, int) or spans < 0:
            raise OptionsError(f"KEEP_SAMD_DOWNSTREAM spans={spans!r}: a number of days >= 0 (0: every day)")
        return spans

    def downstream_config(self) -> Dict:
        """The DownstreamTrainer's custom_config (models/downstream_trainer.py)."""
        keys = ("plugged", "downstream", "scenarios", "epochs")
        return {**{k: self.downstream[k] for k in keys if k in self.downstream}, "spans": self.downstream_spans}

    @property
    def unified_models(self) -> Tuple[str, ...]:
        from models.unified_trainer import MODELS

        names = tuple(self.unified.get("models", tuple(MODELS)))
        unknown = set(names) - set(MODELS)
        if unknown:
            raise OptionsError(f"KEEP_SAMD_UNIFIED names unknown model(s) {sorted(unknown)}; known: {sorted(MODELS)}")
        return names

    def blessing_config(self, model: str) -> Dict:
        """The blessing rule's fields for one model: the defaults, then its `models` entry."""
        from components.model_evaluator.blessing import BlessingConfig

        config = {k: v for k, v in self.blessing.items() if k not in ("baselines", "models")}
        config.update(self.blessing.get("models", {}).get(model, {}))
        try:
            BlessingConfig.from_dict(config)  # fails here, at pipeline creation, on a bad option
        except (TypeError, ValueError) as e:
            raise OptionsError(f"KEEP_SAMD_BLESSING for {model}: {e}") from None
        return config

    @property
    def blessing_baselines(self) -> Dict[str, str]:
        """{model: the model it must beat}; a baseline must be a trained model of this run."""
        baselines = dict(self.blessing.get("baselines", {}))
        trained = set(self.unified_models) | {"keep_general"} | ({"samd"} if self.samd_enabled else set())
        trained |= {"keep_downstream"} if self.downstream_enabled else set()
        for model, base in baselines.items():
            if model not in trained or base not in trained or model == base:
                raise OptionsError(f"KEEP_SAMD_BLESSING baselines: {model!r} -> {base!r}: both must be trained models "
                                 f"of this run ({sorted(trained)}), and differ")
        return baselines

    def serving_model_dir(self, model_name: str) -> str:
        return os.path.join(self.serving_dir, model_name)

    @classmethod
    def from_env(cls, env: Optional[Dict[str, str]] = None) -> "PipelineOptions":
        env = os.environ if env is None else env
        kw = {}
        if env.get("KEEP_SAMD_OUTPUT"):
            kw["output_dir"] = os.path.abspath(env["KEEP_SAMD_OUTPUT"])
        if env.get("KEEP_SAMD_DATA"):
            kw["data_root"] = os.path.abspath(env["KEEP_SAMD_DATA"])
        if env.get("KEEP_SAMD_BEAM_ARGS"):
            kw["beam_pipeline_args"] = tuple(shlex.split(env["KEEP_SAMD_BEAM_ARGS"]))
        for key, field in (("KEEP_SAMD_TRAIN_STEPS", "train_steps"), ("KEEP_SAMD_EVAL_STEPS", "eval_steps"),
                           ("KEEP_SAMD_EPOCHS", "epochs"), ("KEEP_SAMD_SEED", "seed")):
            if env.get(key):
                try:
                    kw[field] = int(env[key])
                except ValueError:
                    raise OptionsError(f"{key}={env[key]!r} is not an integer") from None
        for key, field in (("KEEP_SAMD_KEEP", "keep"), ("KEEP_SAMD_SAMD", "samd"), ("KEEP_SAMD_UNIFIED", "unified"),
                           ("KEEP_SAMD_BLESSING", "blessing"), ("KEEP_SAMD_DOWNSTREAM", "downstream"),
                           ("KEEP_SAMD_SPLIT", "time_split")):
            if env.get(key):
                try:
                    kw[field] = json.loads(env[key])
                except json.JSONDecodeError as e:
                    raise OptionsError(f"{key} is not a JSON object: {e}") from None
                if not isinstance(kw[field], dict):
                    raise OptionsError(f"{key} is not a JSON object")
        return cls(**kw)
