"""The TFX Trainer `run_fn` of every registered Keras model: KEEP's general model and the unified models.

The component's custom_config is a `trainers.config.KerasTrainerConfig`; its `model` is
the model's registry entry (models/registry.py), which says what to build and what the
SavedModel answers. The trainer reads the transformed examples, builds and compiles the
model (`model.compile()`: the optimizer its config names), fits it and exports a
standalone SavedModel (raw tf.Example in, probabilities out) through `models.export`.
With a Tuner before it (trainers/tuner.py), the Tuner's best hyperparameters
(`fn_args.hyperparameters`) override the config's fields, and `training.json` records
them (`hyperparameters`). The Tuner trains its trials with this module's `fit_data`,
`build_model` and `fit`: the same reading of the splits and the same epoch rule.

Epochs follow every trainer's rule (trainers/epochs.py): one pass over the train split
each (its rows counted once here, by the trainer's own reading of the split), at most
`epochs` of them, stopped by the validation click AUC. `training.json` next to the
SavedModel records the budget a model got (examples seen, epochs, the best epoch,
parameters, optimizer), `history.json` in the run folder its learning curves.

Equal budgets: the pipeline gives every unified model one batch size and the same
train steps, so the same training examples before early stopping; each reads the
validation split only for early stopping.

`roles`: the model trains and early-stops on the rows of the scenarios with those roles
only (SAMD's general model on the super scenario, its paper's section 4.1).

`corrupt_labels` plants a worse model, a control the evaluator must refuse to bless:
"shuffle" moves each row's labels to another row of its batch (no signal), "invert"
trains on 1 - label (a swapped label column; AUC well below 0.5).

With TF_CONFIG describing a cluster, the model trains under its tf.distribute strategy
(`trainers.distribute`: MultiWorkerMirroredStrategy, or ParameterServerStrategy with the
embedding tables of at least `min_shard_bytes` sharded); the global batch, and so the
budget, stays the same, and only the chief writes the outputs.
"""

import dataclasses
import os
import time
from typing import Any, Callable, Dict, Optional

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras
from absl import logging
from tfx_bsl.public import tfxio

from models import export
from models import features as F
from models.artifact_io import write_json
from trainers import distribute
from trainers.config import KerasTrainerConfig
from trainers.epochs import early_stopping, epoch_steps
from trainers.records import budget_record, learning_curves, seed_everything, write_training_record


def make_dataset(file_pattern, data_accessor, tf_transform_output, batch_size, shuffle=True, num_epochs=None):
    return data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(
            batch_size=batch_size, shuffle=shuffle, shuffle_buffer_size=20_000, num_epochs=num_epochs
        ),
        tf_transform_output.transformed_metadata.schema,
    ).prefetch(tf.data.AUTOTUNE)


def read_roles(scenarios_csv: str) -> dict:
    """{scenario_id: role} of a scenarios.csv (a ScenarioTable artifact's)."""
    from schemas import scenarios

    return scenarios.roles(scenarios.read_scenarios(scenarios_csv))


def only_scenarios(dataset, indices, batch_size, drop_remainder=True):
    """The batches of `dataset` re-formed from the rows whose transformed scenario_id is in `indices`."""
    wanted = tf.constant(sorted(indices), tf.int64)
    return dataset.unbatch().filter(
        lambda f: tf.reduce_any(tf.equal(tf.reshape(f["scenario_id"], [-1])[:1], wanted))
    ).batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def count_rows(dataset) -> int:
    """Rows of a finite dataset of batches (one pass, parsed: the trainer's own reading of the split)."""
    first = next(iter(dataset.element_spec))
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda n, b: n + tf.shape(b[first], tf.int64)[0]))


def all_vocab_sizes(tf_transform_output):
    names = list(F.VOCABULARY) + list(F.INTEGER_CATEGORICAL_MAX)
    return {n: F.vocab_size(tf_transform_output, n) for n in names}


def shuffle_labels(features):
    """The three labels of each row moved, together, to another row of the batch."""
    labels = tf.stack([features[t] for t in F.LABELS], axis=1)
    labels = tf.gather(labels, tf.random.shuffle(tf.range(tf.shape(labels)[0])))
    return {**features, **{t: labels[:, i] for i, t in enumerate(F.LABELS)}}


def invert_labels(features):
    return {**features, **{t: 1 - features[t] for t in F.LABELS}}


CORRUPTIONS = {"shuffle": shuffle_labels, "invert": invert_labels}  # the names: trainers.config.CORRUPTIONS


def keras_model_dir(serving_model_dir: str) -> str:
    """<model artifact>/Format-Keras, next to TFX's <model artifact>/Format-Serving."""
    return os.path.join(os.path.dirname(serving_model_dir.rstrip("/")), "Format-Keras")


def run_fn(fn_args):
    """Trains and exports under the strategy of the TF_CONFIG cluster (trainers.distribute; none: one process),
    with the Tuner's best hyperparameters (`fn_args.hyperparameters`, when the pipeline has a Tuner) over the
    trainer config's overrides."""
    config = KerasTrainerConfig.from_custom_config(fn_args.custom_config)
    hyperparameters = tuned_values(getattr(fn_args, "hyperparameters", None))
    distribute.run_on_cluster(fn_args, lambda args, strategy: train_and_export(args, strategy, config, hyperparameters),
                              config.min_shard_bytes)


def tuned_values(hyperparameters: Optional[Dict]) -> Dict[str, Any]:
    """{name: value} of the KerasTuner HyperParameters config TFX hands the Trainer ({} without one)."""
    if not hyperparameters:
        return {}
    import keras_tuner  # only with a Tuner: it imports Keras 3 beside tf_keras

    return dict(keras_tuner.HyperParameters.from_config(hyperparameters).values)


def transform_output(fn_args):
    """The Transform output a Trainer's or a Tuner's fn_args name (TFX sets `transform_output` for the Trainer
    only; `transform_graph_path` for both)."""
    return tft.TFTransformOutput(getattr(fn_args, "transform_graph_path", None) or fn_args.transform_output)


def model_overrides(trainer: KerasTrainerConfig, hyperparameters: Optional[Dict] = None) -> Dict[str, Any]:
    """The model config's fields a trainer sets: its config's overrides (or else its batch), then the tuned
    values."""
    overrides = dict(trainer.config)
    if trainer.batch_size is not None:
        overrides.setdefault("batch_size", trainer.batch_size)
    return {**overrides, **(hyperparameters or {})}


def build_model(entry, overrides: Dict, vocab_sizes: Dict[str, int], strategy):
    """(the compiled model, its config): `entry`'s model with `overrides`, built under `strategy`."""
    with strategy.scope():
        model, config = entry.build(overrides, vocab_sizes)
        model.compile()  # the optimizer(s) its config names (models.multitask.MultiTaskSteps.compile)
    return model, config


@dataclasses.dataclass
class FitData:
    """What a Keras model trains on by every trainer's rule (trainers/epochs.py): the train input, the
    validation input (the same rows after every epoch), and the epoch plan for `batch`. `batches(files, ...)`
    reads a split as the trainer does (the scenarios of its roles only, its labels corrupted or not)."""

    train: Any
    validation: Any
    validation_steps: Optional[int]
    rows: int
    batch: int
    steps: int
    epochs: int
    batches: Callable


def fit_data(fn_args, strategy, trainer: KerasTrainerConfig, tft_output, batch: int,
             rows: Optional[int] = None) -> FitData:
    """The train split (`rows` of it: counted here when not given) and the validation split of `fn_args`, in
    batches of `batch`, as `model.fit` under `strategy` takes them."""
    entry = trainer.model
    indices = None
    if trainer.roles:
        roles = read_roles(trainer.scenarios_csv)
        chosen = [s for s, r in roles.items() if r in set(trainer.roles)]
        if not chosen:
            raise ValueError(f"{trainer.scenarios_csv}: no scenario has a role in {list(trainer.roles)}")
        indices = list(F.scenario_indices(tft_output, chosen).values())
        logging.info("training %s on the rows of %s only", entry.name, chosen)
    corrupt = CORRUPTIONS[trainer.corrupt_labels] if trainer.corrupt_labels else None
    if corrupt:
        logging.warning("training %s on CORRUPTED labels (%s): a control that must not be blessed", entry.name,
                        trainer.corrupt_labels)

    def batches(files, corrupt=None, shuffle=True, steps=None):
        def dataset_fn(batch_size, num_epochs=None):
            dataset = make_dataset(files, fn_args.data_accessor, tft_output, batch_size,
                                   shuffle=shuffle and num_epochs is None, num_epochs=num_epochs)
            if indices is not None:
                dataset = only_scenarios(dataset, indices, batch_size, drop_remainder=num_epochs is None)
            if steps:
                dataset = dataset.take(steps)
            return dataset.map(corrupt) if corrupt else dataset

        return dataset_fn

    train = distribute.fit_input(strategy, batches(fn_args.train_files, corrupt), batch, fn_args.train_files)
    # The same validation rows after every epoch: unshuffled and cut to eval_steps, so Keras
    # restarts it each epoch; a repeating, shuffled set was read on from where the last epoch
    # stopped, and the early stop compared different rows.
    eval_steps = max(1, fn_args.eval_steps)
    repeating = distribute.is_parameter_server(strategy)  # its workers need a repeating set
    validation = distribute.fit_input(
        strategy, batches(fn_args.eval_files, shuffle=False, steps=None if repeating else eval_steps), batch,
        fn_args.eval_files)
    if rows is None:
        rows = count_rows(batches(fn_args.train_files)(4096, num_epochs=1))
    steps, epochs = epoch_steps(rows, batch, fn_args.train_steps, trainer.epochs)
    return FitData(train=train, validation=validation,
                   validation_steps=eval_steps if repeating else None,
                   rows=rows, batch=batch, steps=steps, epochs=epochs, batches=batches)


def fit(model, data: FitData, trainer: KerasTrainerConfig, callbacks=(), verbose: int = 2):
    """`model.fit` on `data` by every trainer's rule: its epochs, each validated, stopped `trainer.patience`
    epochs after the best validation click AUC, whose weights are kept. Returns the History."""
    return model.fit(data.train, epochs=data.epochs, steps_per_epoch=data.steps, validation_data=data.validation,
                     validation_steps=data.validation_steps, verbose=verbose,
                     callbacks=[*callbacks, early_stopping(trainer.patience, verbose=1)])


def train_and_export(fn_args, strategy, trainer: KerasTrainerConfig, hyperparameters: Optional[Dict] = None):
    seed_everything(trainer.seed)
    entry = trainer.model
    tft_output = transform_output(fn_args)
    hyperparameters = dict(hyperparameters or {})
    if hyperparameters:
        logging.info("training %s with the Tuner's hyperparameters %s", entry.name, hyperparameters)
    model, config = build_model(entry, model_overrides(trainer, hyperparameters), all_vocab_sizes(tft_output),
                                strategy)
    data = fit_data(fn_args, strategy, trainer, tft_output, config.batch_size)
    logging.info("training %s on %d rows: at most %d epochs of %d steps, batch %d; %s", entry.name, data.rows,
                 data.epochs, data.steps, data.batch, config)
    t0 = time.time()
    history = fit(model, data, trainer,
                  [tf_keras.callbacks.TensorBoard(log_dir=os.path.join(fn_args.model_run_dir, "logs"))])
    seconds = time.time() - t0
    batch, steps = data.batch, data.steps
    trained_steps = len(history.history["loss"]) * steps
    curves = learning_curves(history)
    write_json(os.path.join(fn_args.model_run_dir, "history.json"),
               {"model": entry.name, "train_seconds": seconds, "examples_per_second": trained_steps * batch / seconds,
                "history": curves})
    record = {"model": entry.name, "seconds": seconds, "train_rows": data.rows,
              **budget_record(model, history, batch, steps), "distribution": distribute.describe(strategy, model),
              "hyperparameters": hyperparameters, "history": curves}
    if hasattr(model, "training_report"):  # e.g. ADL: does training route a batch as serving does?
        record.update(model.training_report(next(iter(data.batches(fn_args.eval_files)(batch)))))
    write_training_record(fn_args.serving_model_dir, record)
    export.export_saved_model(model, tft_output, fn_args.serving_model_dir, outputs=entry.outputs,
                              model_name=trainer.model_name)
    if entry.keras_copy:  # beside the SavedModel (not pushed): what SAMD needs to rebuild its teacher
        export.save_keras_model(model, keras_model_dir(fn_args.serving_model_dir))
