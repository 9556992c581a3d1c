"""Trains and exports KEEP's downstream model of the sub-scenarios, plain or knowledge-plugged.

KEEP section 3.2 / 4.3: a production downstream model (models/keep_plugin.py) keeps its
architecture and is trained incrementally, each run warm-starting from the last
pushed one, while the General Knowledge Center's cache feeds its plug-in (Eq. 5).

`run` options (`custom`): a `trainers.config.DownstreamTrainerConfig`, from the pipeline's
KEEP_SAMD_DOWNSTREAM.

Knowledge is joined by raw (user, item, category) ids, point in time: a training row of
day d gets each key's cached parts as of the latest train day before d
(`keep_cache.knowledge_as_of` over the KnowledgeCenter's `daily.npz`), as a cache
refreshed nightly would have served it; no row is joined with knowledge computed
from its own day or later. Validation rows are joined the same way (with the default
split they are later than every train day, so this equals a lookup in the served
cache; with a hash validation slice of the train days it does not). Test rows are
looked up in the served cache, as a client does (evaluator).
Known limit: the knowledge heads are fitted on all train days, so a training row's
knowledge comes from weights that saw its label; test rows' knowledge does not. This
cannot inflate a test score (the test day is unseen), but training and test
knowledge differ in kind; fitting the heads on an earlier window than the downstream
model's days would remove it at the price of data.

Export (one SavedModel, raw tf.Example in, nothing of KEEP inside but the cached
vectors it is given):
* `serving_default`: `examples` (serialized raw tf.Example) [+ `knowledge` [B, W] when
  plugged] -> `click`;
* `knowledge_version` (plugged only): `examples` -> `knowledge_version` (the cache
  version it was trained with) and `knowledge_model` (`keep_knowledge`), per row, so
  a client asks TF Serving for that version of the cache (serving/client.py).
Next to it: `checkpoint/` (what the next run warm-starts from) and `training.json`.
Vocabularies are fitted on each run's train days, so a run with a new day has more
(and reordered) ids than the model it warm-starts from: each id's embedding row is
moved to its new row (`warm_start_across_vocabularies`, reading the old vocabularies
from the base model's SavedModel assets); new ids start fresh.
"""

import json
import os
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras
from absl import logging
from tfx.utils import path_utils

from models import export, registry
from schemas.scenarios import read_scenarios
from models import features as F
from models.artifact_io import read_json, write_json
from models.keep_cache import knowledge_as_of
from models.keep_plugin import KNOWLEDGE, DownstreamConfig, DownstreamModel, save_checkpoint, warm_start
from trainers.config import DownstreamTrainerConfig
from trainers.epochs import early_stopping, epoch_steps
from trainers.records import TRAINING_FILE, budget_record, learning_curves, seed_everything
from trainers.transformed_data import load_transformed, raw_ids, transformed_index

KNOWLEDGE_MODEL = registry.KNOWLEDGE_MODEL  # the served cache a client looks the knowledge up in
CHECKPOINT = os.path.join("checkpoint", "model")
RAW_KEYS = ("user_id", "item_id", "category_id")


def sub_scenarios(scenarios_csv: str, chosen=None):
    """The scenarios the downstream model serves: `chosen`, or every one but the super scenario."""
    rows = list(read_scenarios(scenarios_csv).values())
    known = [r["scenario_id"] for r in rows]
    if chosen:
        unknown = sorted(set(chosen) - set(known))
        if unknown:
            raise ValueError(f"KEEP_SAMD_DOWNSTREAM scenarios {unknown} are not in {scenarios_csv}")
        return list(chosen)
    return [r["scenario_id"] for r in rows if r.get("role") != "super"]


def model_inputs(config: DownstreamConfig):
    names = list(config.id_features) + list(config.numeric_features) + [s for s, _ in config.sequence_features]
    return names + ([KNOWLEDGE] if config.plugged else [])


def _rows(pattern, tft_output, scenario_index, spans=0, latest_day=None, daily=None):
    """The scenarios' rows; with `daily` ({"strategy", "tables"} of the KnowledgeCenter), their knowledge
    joined point in time."""
    indices = list(scenario_index.values())

    def wanted(batch):
        mask = np.isin(batch["scenario_id"], indices)
        if spans:
            mask &= batch[F.DAY] > latest_day - spans
        return mask

    rows = load_transformed(pattern, tft_output, where=wanted)
    if daily is not None:
        raw = {k: raw_ids(tft_output, k, rows[k]) for k in RAW_KEYS}
        rows[KNOWLEDGE] = knowledge_as_of(daily["tables"], daily["strategy"], raw["user_id"], raw["item_id"],
                                          raw["category_id"], rows[F.DAY])
    return rows


class DownstreamServing(export.ServingModule):
    """The downstream model's signatures: prediction (with the knowledge input when plugged) and its cache version."""

    def __init__(self, model, tf_transform_output, features, knowledge_version: str):
        super().__init__(model, tf_transform_output, features)
        self._version = str(knowledge_version)

    def predict_signature(self):
        c = self.model.config
        if not c.plugged:
            return self.signature(("click",))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples"),
                                      tf.TensorSpec([None, c.knowledge_width], tf.float32, name=KNOWLEDGE)])
        def serve(examples, knowledge):
            features = dict(self.transformed(examples))
            features[KNOWLEDGE] = knowledge
            return {"click": tf.identity(self.model(features, training=False)["click"], name="click")}

        return serve.get_concrete_function()

    def version_signature(self):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(examples):
            n = tf.shape(examples)[:1]
            return {"knowledge_version": tf.fill(n, tf.constant(self._version)),
                    "knowledge_model": tf.fill(n, tf.constant(KNOWLEDGE_MODEL))}

        return serve.get_concrete_function()


def export_model(model: DownstreamModel, tft_output, export_dir: str, knowledge_version: Optional[int],
                 model_name: str) -> None:
    c = model.config
    raw_features = list(c.id_features) + list(c.numeric_features) + [s for s, _ in c.sequence_features]
    module = DownstreamServing(model, tft_output, raw_features, knowledge_version or "")
    signatures = {"serving_default": module.predict_signature()}
    if c.plugged:
        signatures["knowledge_version"] = module.version_signature()
    tf.saved_model.save(module, export_dir, signatures=signatures)
    export.write_warmup_requests(export_dir, model_name, list(signatures),
                                 export.serving_feature_spec(tft_output, raw_features),
                                 extra_inputs={"serving_default": {KNOWLEDGE: c.knowledge_width}} if c.plugged else None)


def _dataset(rows, names, batch_size, shuffle):
    ds = tf.data.Dataset.from_tensor_slices({k: rows[k] for k in names + ["click"]})
    if shuffle:
        ds = ds.shuffle(20_000, seed=0).repeat()
    return ds.batch(batch_size, drop_remainder=shuffle).prefetch(2)


def build_model(config: DownstreamConfig, vocab_sizes, rows) -> DownstreamModel:
    """A compiled downstream model, built on a few of `rows` (so a checkpoint can be restored into it)."""
    model = DownstreamModel(config, vocab_sizes, name="keep_downstream")
    model.compile(optimizer=tf_keras.optimizers.Adam(config.learning_rate))
    model(next(iter(_dataset(rows, model_inputs(config), 8, False))))
    return model


def fit(model: DownstreamModel, train_rows, eval_rows, train_steps: int, epochs: int, patience: int,
        verbose: int = 2):
    """Trains at most `epochs` passes over `train_rows` and `train_steps` steps (trainers.epochs), keeping the
    best epoch by validation click AUC."""
    names = model_inputs(model.config)
    steps, epochs = epoch_steps(len(train_rows["click"]), model.config.batch_size, train_steps, epochs)
    return model.fit(_dataset(train_rows, names, model.config.batch_size, True), epochs=epochs,
                     steps_per_epoch=steps,
                     validation_data=_dataset(eval_rows, names, 2048, False), verbose=verbose,
                     # Id embeddings overfit within a few passes: keep the best epoch.
                     callbacks=[early_stopping(patience)])


def predict(model: DownstreamModel, rows, batch_size: int = 4096) -> np.ndarray:
    """Click probabilities over `rows`."""
    out = [model(batch, training=False)["click"].numpy()
           for batch in _dataset(rows, model_inputs(model.config), batch_size, False)]
    return np.concatenate(out) if out else np.zeros(0)


def vocabulary_remap(old: Sequence[str], new: Sequence[str], oov_buckets: int = F.OOV_BUCKETS) -> np.ndarray:
    """For each row of an id's new embedding table, the row of its old table with the same id (-1: a new id).

    Rows are the transform's indices: 0 = absent, 1.. the vocabulary, then the OOV buckets.
    """
    position = {v: i for i, v in enumerate(old)}
    return np.array([0] + [position[v] + 1 if v in position else -1 for v in new]
                    + [len(old) + 1 + k for k in range(oov_buckets)], np.int64)


def _vocabulary(path: str) -> list:
    with tf.io.gfile.GFile(path) as f:  # TFT's vocabulary files: one token per line, "\n" only
        tokens = f.read().split("\n")
    return tokens[:-1] if tokens and tokens[-1] == "" else tokens


def warm_start_across_vocabularies(model: DownstreamModel, base_model_dir: str, tft_output, rows):
    """warm_start from the base model's checkpoint when this run's vocabularies grew or reordered.

    Vocabularies are fitted on each run's train days, so a new day brings new ids and
    moves old ones. The base model's own vocabularies travel in its SavedModel's assets:
    its checkpoint is restored into a twin with the old table sizes, then every
    variable is copied, an id's embedding row going to that id's new row (new ids keep
    their fresh initialisation). Returns (restored, new, remapped features).
    """
    checkpoint = os.path.join(base_model_dir, CHECKPOINT)
    config, old_sizes, remaps = model.config, {}, {}
    for n in config.id_features:
        if n not in F.VOCABULARY:
            continue
        path = os.path.join(path_utils.serving_model_path(base_model_dir), "assets", F.VOCABULARY[n])
        if not tf.io.gfile.exists(path):
            raise ValueError(f"{base_model_dir}: no vocabulary of {n} in its SavedModel ({path})")
        old = _vocabulary(path)
        new = [v.decode() if isinstance(v, bytes) else str(v) for v in tft_output.vocabulary_by_name(F.VOCABULARY[n])]
        if old != new:
            old_sizes[n], remaps[n] = len(old) + 1 + F.OOV_BUCKETS, vocabulary_remap(old, new)
    if not remaps:
        return (*warm_start(model, checkpoint), [])
    zeros = {k: np.zeros_like(v[:8]) for k, v in rows.items()}  # in range of any table
    twin = build_model(config, {**model.vocab_sizes, **old_sizes}, zeros)
    restored, new = warm_start(twin, checkpoint)
    tables = {id(layer.embeddings): n for n, layer in model.embeddings.items()}
    # The twin is the same architecture built the same way: its variables come in the same
    # order (auto-generated layer names differ between instances, so names cannot match them).
    if len(model.variables) != len(twin.variables):
        raise ValueError(f"{checkpoint}: the base model has another architecture")
    for v, old in zip(model.variables, twin.variables):
        remapped = tables.get(id(v)) in remaps  # an id table whose vocabulary grew or only reordered
        if not remapped:
            if old.shape != v.shape:
                raise ValueError(f"{checkpoint}: {v.name} has shape {v.shape}, the base model's {old.shape}")
            v.assign(old)
            continue
        if old.shape[1:] != v.shape[1:]:
            raise ValueError(f"{checkpoint}: {v.name} has shape {v.shape}, the base model's {old.shape}")
        index = remaps[tables[id(v)]]
        value, kept = v.numpy(), index >= 0
        value[kept] = old.numpy()[index[kept]]
        v.assign(value)
    return restored, new, sorted(remaps)


def run(train_pattern: str, eval_pattern: str, transform_graph: str, scenarios_csv: str, output_dir: str,
        record_dir: str, train_steps: int, custom: Optional[Mapping] = None, knowledge_dir: Optional[str] = None,
        knowledge_version: Optional[int] = None, base_model_dir: Optional[str] = None) -> Dict:
    """Trains (warm-started from `base_model_dir`'s checkpoint when given) and exports at `output_dir`."""
    trainer = DownstreamTrainerConfig.from_custom_config(custom)
    seed_everything(trainer.seed)
    plugged = trainer.plugged and knowledge_dir is not None
    tft_output = tft.TFTransformOutput(transform_graph)
    scenarios = sub_scenarios(scenarios_csv, trainer.scenarios)
    index = {s: transformed_index(tft_output, "scenario_id", s) for s in scenarios}
    spans = trainer.spans
    latest_day = None
    if spans:
        latest_day = int(load_transformed(train_pattern, tft_output, columns=[F.DAY])[F.DAY].max())
    daily = None
    if plugged:  # the KnowledgeCenter artifact: <uri>/Format-Serving is the cache, <uri> its record
        from trainers import knowledge_center

        knowledge_record = os.path.dirname(knowledge_dir.rstrip("/"))
        daily = {"strategy": read_json(os.path.join(knowledge_record, knowledge_center.CACHE_FILE))["strategy"],
                 "tables": knowledge_center.load_daily(knowledge_record)}
    train_rows = _rows(train_pattern, tft_output, index, spans, latest_day, daily)
    eval_rows = _rows(eval_pattern, tft_output, index, daily=daily)
    if not len(train_rows["click"]):
        raise ValueError(f"no training rows for scenarios {scenarios} in the latest {spans} day(s)")
    width = int(train_rows[KNOWLEDGE].shape[1]) if plugged else 0
    config = DownstreamConfig.from_dict({**trainer.downstream, "knowledge_width": width})
    vocab_sizes = {n: F.vocab_size(tft_output, n) for n in config.id_features}
    model = build_model(config, vocab_sizes, train_rows)

    warm = {"base_model": base_model_dir, "restored": 0, "new": [], "skipped": None, "remapped": []}
    if base_model_dir:
        checkpoint = os.path.join(base_model_dir, CHECKPOINT)
        try:
            restored, new, remapped = warm_start_across_vocabularies(model, base_model_dir, tft_output, train_rows)
            warm.update(restored=len(restored), new=new, remapped=remapped)
            logging.info("warm-started from %s: %d variables restored, new: %s", checkpoint, len(restored), new)
        except (ValueError, tf.errors.NotFoundError) as e:  # another architecture: train afresh, and say so
            warm["skipped"] = str(e)
            logging.warning("not warm-starting from %s: %s", checkpoint, e)

    history = fit(model, train_rows, eval_rows, train_steps, trainer.epochs, trainer.patience)
    export_model(model, tft_output, output_dir, knowledge_version if plugged else None,
                 trainer.model_name)
    save_checkpoint(model, os.path.join(record_dir, CHECKPOINT))
    record = {"plugged": plugged, "knowledge_version": knowledge_version if plugged else None,
              "knowledge_width": width, "scenarios": scenarios, "spans": spans, "latest_day": latest_day,
              "train_rows": int(len(train_rows["click"])), "eval_rows": int(len(eval_rows["click"])),
              "warm_start": warm, **budget_record(model, history, config.batch_size, history.params["steps"]),
              "history": learning_curves(history),
              "config": json.loads(json.dumps(config.__dict__))}
    write_json(os.path.join(record_dir, TRAINING_FILE), record)
    return record
