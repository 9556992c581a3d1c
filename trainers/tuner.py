"""The TFX Tuner's `tuner_fn` of every registered Keras model: KEEP's general model and the unified models.

The component's custom_config is a `trainers.config.KerasTunerConfig`: the config the model's
Trainer gets (a `KerasTrainerConfig`) and `max_trials`. The search space is the model's
`SEARCH_SPACE` (on its Keras class, next to its config; `models.registry.ModelEntry.search_space`)
less the fields the trainer config sets itself: a value the options give stays as given. The
search is KerasTuner's random search, seeded with the trainer's seed, whose first trial is the
config's defaults, so the best trial is one the defaults do not beat on validation.

Each trial trains as the Trainer does (`trainers.generic`: `build_model`, `fit_data`, `fit`):
the model built from the trainer config's overrides and the trial's values, the same batches of
the train split, an epoch a pass over its rows, at most `epochs` of them, stopped `patience`
epochs after the best validation click AUC. The trial's score is that best epoch's
`val_auc_click` on the eval_args split (the pipeline's `validation` day); the test split is
never read. TFX writes the best trial's HyperParameters as `best_hyperparameters`, which the
Trainer applies over its config (`trainers.generic.run_fn`).

KerasTuner 1.4 drives Keras 3 while the models are tf_keras ones, and its own build-and-fit
path accepts Keras 3 models and Histories only: `run_trial` here builds and fits the tf_keras
model itself and reports the best epoch's metrics as a dict. Nothing is checkpointed: the
Trainer trains the model again with the best values.
"""

from typing import Callable, Dict, Iterable

import keras_tuner as kt
import tensorflow as tf
import tf_keras
from keras_tuner.engine import trial as trial_module
from tfx import v1 as tfx

from models.configs import LogRange
from trainers import generic
from trainers.config import KerasTunerConfig
from trainers.records import seed_everything

OBJECTIVE = "val_auc_click"  # what the early stop watches (trainers/epochs.py)


def search_space(entry, pinned: Iterable[str] = ()) -> kt.HyperParameters:
    """`entry`'s search space as KerasTuner HyperParameters, each at its config default, less the `pinned`
    config fields."""
    defaults = entry.make_config({})
    hp = kt.HyperParameters()
    for name, values in entry.search_space().items():
        if name in set(pinned):
            continue
        default = getattr(defaults, name)
        if isinstance(values, LogRange):
            hp.Float(name, values.low, values.high, sampling="log", default=default)
        else:
            hp.Choice(name, list(values.values), default=default)
    return hp


class DefaultsFirstOracle(kt.oracles.RandomSearchOracle):
    """KerasTuner's random search whose first trial is every hyperparameter at its default."""

    def populate_space(self, trial_id):
        if not self.trials:
            return {"status": trial_module.TrialStatus.RUNNING, "values": dict(self.hyperparameters.values)}
        return super().populate_space(trial_id)


def best_epoch(history: Dict[str, list], objective: str = OBJECTIVE) -> Dict[str, float]:
    """The metrics of the epoch with the highest `objective` (the one the early stop restores)."""
    scores = history[objective]
    best = max(range(len(scores)), key=scores.__getitem__)
    return {name: float(values[best]) for name, values in history.items()}


class ModelTuner(kt.Tuner):
    """A KerasTuner Tuner whose trial is `train({name: value})`, a tf_keras History; scored by its best epoch."""

    def __init__(self, train: Callable[[Dict], tf_keras.callbacks.History], **kwargs):
        super().__init__(hypermodel=None, **kwargs)
        self._train = train

    def run_trial(self, trial, *args, **kwargs):
        return best_epoch(self._train(dict(trial.hyperparameters.values)).history)


def tuner_fn(fn_args) -> tfx.components.TunerFnResult:
    """The search of the model `fn_args.custom_config` names (a KerasTunerConfig); TFX's Tuner runs it."""
    config = KerasTunerConfig.from_custom_config(fn_args.custom_config)
    entry = config.model
    fixed = generic.model_overrides(config)  # the trainer config's fields: not searched
    space = search_space(entry, pinned=fixed)
    tft_output = generic.transform_output(fn_args)
    vocab_sizes = generic.all_vocab_sizes(tft_output)
    strategy = tf.distribute.get_strategy()
    batch = entry.make_config(fixed).batch_size  # no search space holds the batch (equal budgets)
    counted = {}

    def train(values):
        tf_keras.backend.clear_session()  # the last trial's model
        seed_everything(config.seed)  # every trial starts as the Trainer does
        model, _ = generic.build_model(entry, generic.model_overrides(config, values), vocab_sizes, strategy)
        data = generic.fit_data(fn_args, strategy, config, tft_output, batch, counted.get("rows"))
        counted["rows"] = data.rows
        return generic.fit(model, data, config)

    oracle = DefaultsFirstOracle(objective=kt.Objective(OBJECTIVE, "max"), max_trials=config.max_trials,
                                 seed=config.seed, hyperparameters=space, tune_new_entries=False,
                                 allow_new_entries=False)
    tuner = ModelTuner(train, oracle=oracle, directory=fn_args.working_dir, project_name=entry.name,
                       overwrite=True)
    return tfx.components.TunerFnResult(tuner=tuner, fit_kwargs={})
