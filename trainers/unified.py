"""TFX Trainer entry point (`run_fn`) for the unified multi-scenario, multi-task models and baselines.

One Trainer per model, all on the same transformed examples; each exports one
SavedModel (raw tf.Example in, `scenario_id` included; click, conversion and cart
probabilities out) pushed as its own TF Serving model.

custom_config:
    {"model": "pepnet" | "adl" | "grec" | "shared_bottom" | "mmoe" | "logistic_regression",
     "config": {<the model's config fields>}, "epochs": int, "patience": int, "model_name": str,
     "batch_size": int, "corrupt_labels": "shuffle" | "invert" | None}

Equal budgets: every unified model and baseline trains with the same batch size
(`batch_size`, default BUDGET_BATCH_SIZE, replacing its config's unless that model's
`config` sets one explicitly) and the same train steps, so the same number of training
examples before early stopping; each reads the validation split only for early
stopping. `training.json` next to the SavedModel records what it got: examples seen,
epochs, the best epoch, parameters, optimizer.

`corrupt_labels` plants a worse model, a control the evaluator must refuse to bless:
"shuffle" moves each row's labels to another row of its batch (no signal; its AUC
is near 0.5 but, with selection on validation AUC, not reliably within a small
margin of it), "invert" trains on 1 - label (a swapped label column; AUC well
below 0.5).

With TF_CONFIG describing a cluster, the model trains under its tf.distribute strategy
(`trainers.distribute`, as KEEP's trainer does); the global batch, and so the budget,
stays the same.
"""

import importlib
import inspect
import os
import time

import tensorflow_transform as tft
import tf_keras
from absl import logging

from trainers import distribute
from models import export
from models import features as F
from models.artifact_io import write_json
from trainers.keep import make_dataset
from models.multitask import PATIENCE, budget_record, seed_everything, write_training_record

# name -> (module, model class, config class); each model takes (config, vocab_sizes).
MODELS = {
    "pepnet": ("models.pepnet", "PEPNetModel", "PEPNetConfig"),
    "adl": ("models.adl", "AdlModel", "ADLConfig"),
    "grec": ("models.grec", "GRecModel", "GRecConfig"),
    "shared_bottom": ("models.baselines", "SharedBottomModel", "BaselineConfig"),
    "mmoe": ("models.baselines", "MMoEModel", "BaselineConfig"),
    "logistic_regression": ("models.linear", "LogisticRegressionModel", "LinearConfig"),
}


def build(name: str, overrides, vocab_sizes):
    if name not in MODELS:
        raise ValueError(f"unknown unified model {name!r}; one of {sorted(MODELS)}")
    module, model_cls, config_cls = MODELS[name]
    module = importlib.import_module(module)
    config = getattr(module, config_cls).from_dict(overrides)
    return getattr(module, model_cls)(config, vocab_sizes), config


def all_vocab_sizes(tf_transform_output):
    names = list(F.VOCABULARY) + list(F.INTEGER_CATEGORICAL_MAX)
    return {n: F.vocab_size(tf_transform_output, n) for n in names}


def shuffle_labels(features):
    """The three labels of each row moved, together, to another row of the batch."""
    import tensorflow as tf

    labels = tf.stack([features[t] for t in F.LABELS], axis=1)
    labels = tf.gather(labels, tf.random.shuffle(tf.range(tf.shape(labels)[0])))
    return {**features, **{t: labels[:, i] for i, t in enumerate(F.LABELS)}}


def invert_labels(features):
    return {**features, **{t: 1 - features[t] for t in F.LABELS}}


CORRUPTIONS = {"shuffle": shuffle_labels, "invert": invert_labels}
BUDGET_BATCH_SIZE = 512  # every unified model's and baseline's batch in the pipeline (equal budgets)


def run_fn(fn_args):
    """Trains and exports under the strategy of the TF_CONFIG cluster (trainers.distribute; none: one process)."""
    distribute.run_on_cluster(fn_args, train_and_export)


def train_and_export(fn_args, strategy):
    custom = dict(fn_args.custom_config or {})
    seed_everything(custom)
    name = custom["model"]
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    overrides = dict(custom.get("config") or {})
    overrides.setdefault("batch_size", int(custom.get("batch_size") or BUDGET_BATCH_SIZE))
    with strategy.scope():
        model, config = build(name, overrides, all_vocab_sizes(tft_output))
        if "embedding_optimizer" in inspect.signature(model.compile).parameters:
            model.compile()  # PEPNet builds its own pair of optimizers from its config
        else:
            model.compile(optimizer=tf_keras.optimizers.Adam(getattr(config, "learning_rate", 1e-3)))
    batch = config.batch_size
    corruption = custom.get("corrupt_labels")
    if corruption:
        if corruption not in CORRUPTIONS:
            raise ValueError(f"corrupt_labels={corruption!r}: one of {sorted(CORRUPTIONS)}")
        logging.warning("training %s on CORRUPTED labels (%s): a control that must not be blessed", name, corruption)

    def batches(files, corrupt=None):
        def dataset_fn(batch_size):
            dataset = make_dataset(files, fn_args.data_accessor, tft_output, batch_size)
            return dataset.map(corrupt) if corrupt else dataset

        return dataset_fn

    train = distribute.fit_input(strategy, batches(fn_args.train_files, CORRUPTIONS.get(corruption)), batch,
                                 fn_args.train_files)
    evaluation = distribute.fit_input(strategy, batches(fn_args.eval_files), batch, fn_args.eval_files)
    epochs = max(1, int(custom["epochs"]))  # no default here: the pipeline options hold it
    steps = max(1, fn_args.train_steps // epochs)
    logging.info("training %s: %d epochs of %d steps, batch %d; %s", name, epochs, steps, batch, config)
    t0 = time.time()
    history = model.fit(
        train, epochs=epochs, steps_per_epoch=steps, validation_data=evaluation,
        validation_steps=max(1, fn_args.eval_steps), verbose=2,
        callbacks=[tf_keras.callbacks.EarlyStopping(monitor="val_auc_click", mode="max",
                                                    patience=int(custom.get("patience", PATIENCE)),
                                                    restore_best_weights=True, verbose=1)],
    )
    seconds = time.time() - t0
    trained_steps = len(history.history["loss"]) * steps
    write_json(os.path.join(fn_args.model_run_dir, "history.json"),
               {"model": name, "train_seconds": seconds, "examples_per_second": trained_steps * batch / seconds,
                "history": {k: [float(x) for x in v] for k, v in history.history.items()}})
    record = {"model": name, "seconds": seconds, **budget_record(model, history, batch, steps),
              "distribution": distribute.describe(strategy, model)}
    if name == "adl":  # does training route a validation batch as serving does?
        from models.adl import routing_report

        report = routing_report(model, next(iter(batches(fn_args.eval_files)(batch))))
        record["routing"] = {k: report[k] for k in ("train_serve_agreement", "batch_fit_agreement",
                                                    "cluster_sizes", "max_centre_cosine")}
    write_training_record(fn_args.serving_model_dir, record)
    outputs = {"serving_default": ("click", "conversion", "cart")}
    if hasattr(model, "cluster_assignment"):  # ADL: which cluster each example is routed to, for the report
        outputs["routing"] = ("cluster",)
    export.export_saved_model(model, tft_output, fn_args.serving_model_dir, outputs=outputs,
                              model_name=custom.get("model_name", name))
