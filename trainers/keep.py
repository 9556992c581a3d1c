"""TFX Trainer entry point for the KEEP general model (`run_fn`).

Reads the transformed examples, trains `models.keep.KeepModel` with its hybrid loss,
and exports a standalone SavedModel through `models.export`.

`custom_config` (from the pipeline) may hold:
    {"keep": {<KeepConfig field>: value, ...}, "epochs": int, "patience": int, "seed": int,
     "model_name": str, "roles": [role, ...], "scenarios_csv": path}

With "roles", the model trains and early-stops on the rows of the scenarios with those
roles in `scenarios_csv` only (set by components.scenario_trainer from the ScenarioTable
artifact): SAMD's general model is trained on the super scenario
(its paper's section 4.1), the served KEEP model on every scenario.

The train steps are spread over `epochs`; after each, the validation split is scored and
training stops once the click AUC has not improved for `patience` epochs, keeping
the best epoch's weights. Recommendation models overfit id embeddings within a few
passes over the data, and the validation AUC, not the step count, says when.

With TF_CONFIG describing a cluster, the model trains under its tf.distribute strategy
(`trainers.distribute`: MultiWorkerMirroredStrategy, or ParameterServerStrategy with the
embedding tables of at least custom_config "min_shard_bytes" sharded) and only the
chief writes the outputs.
"""

import os

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras
from absl import logging
from tfx_bsl.public import tfxio

from trainers import distribute
from models import export
from models import features as F
from models.artifact_io import write_json
from models.keep import KeepConfig, KeepModel
from models.multitask import PATIENCE, budget_record, seed_everything, write_training_record


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


def only_scenarios(dataset, indices, batch_size):
    """The batches of `dataset` re-formed from the rows whose transformed scenario_id is in `indices`."""
    wanted = tf.constant(sorted(indices), tf.int64)
    return dataset.unbatch().filter(
        lambda f: tf.reduce_any(tf.equal(tf.reshape(f["scenario_id"], [-1])[:1], wanted))
    ).batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def build_model(config: KeepConfig, tf_transform_output) -> KeepModel:
    vocab_sizes = {name: F.vocab_size(tf_transform_output, name) for name in config.id_features}
    model = KeepModel(config, vocab_sizes, name="keep_general")
    model.compile(optimizer=tf_keras.optimizers.Adam(config.learning_rate))
    return model


def run_fn(fn_args):
    """Trains and exports under the strategy of the TF_CONFIG cluster (trainers.distribute; none: one process)."""
    distribute.run_on_cluster(fn_args, train_and_export)


def train_and_export(fn_args, strategy):
    custom = dict(fn_args.custom_config or {})
    seed_everything(custom)
    config = KeepConfig.from_dict(custom.get("keep"))
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    indices = None
    if custom.get("roles"):
        roles = read_roles(custom["scenarios_csv"])
        chosen = [s for s, r in roles.items() if r in set(custom["roles"])]
        if not chosen:
            raise ValueError(f"{custom['scenarios_csv']}: no scenario has a role in {custom['roles']}")
        indices = list(F.scenario_indices(tft_output, chosen).values())
        logging.info("training KEEP on the rows of %s only", chosen)

    def fit_input(files):
        def batches(batch_size):
            dataset = make_dataset(files, fn_args.data_accessor, tft_output, batch_size)
            return dataset if indices is None else only_scenarios(dataset, indices, batch_size)

        return distribute.fit_input(strategy, batches, config.batch_size, files)

    train, evaluation = fit_input(fn_args.train_files), fit_input(fn_args.eval_files)
    with strategy.scope():
        model = build_model(config, tft_output)
    epochs = max(1, int(custom["epochs"]))  # no default here: the pipeline options hold it
    patience = max(1, int(custom.get("patience", PATIENCE)))
    steps = max(1, fn_args.train_steps // epochs)
    logging.info("training KEEP: %d epochs of %d steps, batch %d; %s", epochs, steps, config.batch_size, config)
    history = model.fit(
        train,
        epochs=epochs,
        steps_per_epoch=steps,
        validation_data=evaluation,
        validation_steps=max(1, fn_args.eval_steps),
        callbacks=[
            tf_keras.callbacks.TensorBoard(log_dir=os.path.join(fn_args.model_run_dir, "logs")),
            tf_keras.callbacks.EarlyStopping(
                monitor="val_auc_click", mode="max", patience=patience, restore_best_weights=True, verbose=1
            ),
        ],
        verbose=2,
    )
    write_json(os.path.join(fn_args.model_run_dir, "history.json"),
               {k: [float(x) for x in v] for k, v in history.history.items()})
    write_training_record(fn_args.serving_model_dir,
                          {"model": "keep", **budget_record(model, history, config.batch_size, steps),
                           "distribution": distribute.describe(strategy, model)})
    export.export_saved_model(
        model,
        tft_output,
        fn_args.serving_model_dir,
        outputs={"serving_default": ("click", "conversion", "cart"), "knowledge": ("knowledge",)},
        model_name=custom.get("model_name", "keep_general"),
    )
    # Beside the SavedModel (not pushed): what SAMD needs to rebuild the teacher.
    export.save_keras_model(model, keras_model_dir(fn_args.serving_model_dir))


def keras_model_dir(serving_model_dir: str) -> str:
    """<model artifact>/Format-Keras, next to TFX's <model artifact>/Format-Serving."""
    return os.path.join(os.path.dirname(serving_model_dir.rstrip("/")), "Format-Keras")
