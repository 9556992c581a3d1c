"""The General Knowledge Center's work (KEEP section 4.3, Figure 5): train the cacheable
knowledge heads, compute the cache for every key of the data, export it as a servable.

One run:
1. trains `CacheableKnowledgeModel` (decomposition, degeneration or both, Equation 6)
   on KEEP's three tasks over the transformed train split (scored on validation);
2. computes K̂_u for every user, K̂_i for every item and K̂_uc for every user-category
   pair of the train split only, oldest day first, so a key seen on several days
   keeps its latest value (the user's freshest behaviour sequence). Validation and
   test days are later than every train day and never enter the cache: the models
   are chosen and scored on rows the cache has not seen;
3. saves the `KnowledgeCache` SavedModel (raw ids in, knowledge out, `version` out),
   `cache.json` (version, strategy, width, number of keys per part, validation AUCs),
   `daily.npz` (each key's parts per train day, for point-in-time joins of training
   rows: `load_daily`, `keep_cache.knowledge_as_of`) and the heads' weights (`heads/`,
   to recompute or audit any cached entry).

The version is chosen by the caller (the component uses the push time, in seconds):
it is both the TF Serving version folder the cache is pushed to and the value the
servable answers, so a downstream model records which cache it was trained with.
"""

import json
import os
from typing import Dict, Mapping, Optional

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging

from models import export
from models import features as F
from models.artifact_io import read_json, write_json
from models.keep_cache import (CacheableKnowledgeConfig, CacheableKnowledgeModel, KnowledgeCache, daily_tables,
                               latest_tables)
from trainers.config import KnowledgeCenterConfig
from trainers.epochs import early_stopping, epoch_steps
from trainers.records import seed_everything
from trainers.transformed_data import load_transformed, raw_ids

CACHE_FILE = "cache.json"
DAILY_FILE = "daily.npz"
HEADS_DIR = "heads"
RAW_KEYS = ("user_id", "item_id", "category_id")


def _model_inputs(config: CacheableKnowledgeConfig):
    names = set(config.user_features) | set(config.item_features) | set(config.item_numeric)
    names |= {s for s, _ in config.history}
    return sorted(names) + list(F.LABELS)


def train(config: CacheableKnowledgeConfig, tf_transform_output, train_rows, eval_rows, train_steps: int,
          epochs: int, patience: int) -> CacheableKnowledgeModel:
    vocab_sizes = {n: F.vocab_size(tf_transform_output, n) for n in set(config.user_features) | set(config.item_features)}
    model = CacheableKnowledgeModel(config, vocab_sizes, name="keep_knowledge_heads")
    model.compile()  # Adam at the config's rate (MultiTaskSteps.compile)
    names = _model_inputs(config)
    data = tf.data.Dataset.from_tensor_slices({k: train_rows[k] for k in names})
    data = data.shuffle(20_000, seed=0).repeat().batch(config.batch_size, drop_remainder=True)
    evaluation = tf.data.Dataset.from_tensor_slices({k: eval_rows[k] for k in names}).batch(2048)
    steps, epochs = epoch_steps(len(train_rows[F.DAY]), config.batch_size, train_steps, epochs)
    model.fit(data, epochs=epochs, steps_per_epoch=steps, validation_data=evaluation,
              verbose=2, callbacks=[early_stopping(patience)])
    return model


def knowledge_batches(model: CacheableKnowledgeModel, tf_transform_output, rows: Mapping[str, np.ndarray],
                      batch_size: int = 4096):
    """(features, raw ids and days) batches over `rows`, oldest day first (daily_tables keeps each day's last)."""
    order = np.argsort(rows[F.DAY], kind="stable")
    names = [n for n in _model_inputs(model.config) if n not in F.LABELS]
    raw = {k: raw_ids(tf_transform_output, k, rows[k][order]) for k in RAW_KEYS}
    raw["day"] = rows[F.DAY][order]
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        yield ({k: tf.constant(rows[k][idx]) for k in names},
               {k: v[s:s + batch_size] for k, v in raw.items()})


def save_daily(tables, path: str) -> None:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **{f"{part}.{field}": (a.astype(str) if field == "keys" else a)
                        for part, arrays in tables.items() for field, a in zip(("keys", "days", "rows"), arrays)})
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buffer.getvalue())


def load_daily(record_dir: str):
    """{part: (keys, days, rows)} a KnowledgeCenter run saved (for `keep_cache.knowledge_as_of`)."""
    import io

    with tf.io.gfile.GFile(os.path.join(record_dir, DAILY_FILE), "rb") as f:
        data = np.load(io.BytesIO(f.read()))
        parts = sorted({k.split(".")[0] for k in data.files})
        return {p: (data[f"{p}.keys"].astype(object), data[f"{p}.days"], data[f"{p}.rows"]) for p in parts}


def run(train_pattern: str, eval_pattern: str, transform_graph: str, output_dir: str, record_dir: str,
        train_steps: int, version: int, custom: Optional[Mapping] = None) -> Dict:
    """Trains the heads, saves the cache's SavedModel at `output_dir` and cache.json in `record_dir`."""
    trainer = KnowledgeCenterConfig.from_custom_config(custom)
    seed_everything(trainer.seed)
    config = CacheableKnowledgeConfig.from_dict(trainer.knowledge)
    tft_output = tft.TFTransformOutput(transform_graph)
    columns = sorted(set(_model_inputs(config)) | set(RAW_KEYS) | {F.DAY})
    train_rows = load_transformed(train_pattern, tft_output, columns)
    eval_rows = load_transformed(eval_pattern, tft_output, columns)
    logging.info("GKC: training %s knowledge heads on %d rows, %d steps", config.strategy,
                 len(train_rows[F.DAY]), train_steps)
    model = train(config, tft_output, train_rows, eval_rows, train_steps, trainer.epochs, trainer.patience)
    scores = model.evaluate(tf.data.Dataset.from_tensor_slices(
        {k: eval_rows[k] for k in _model_inputs(config)}).batch(2048), return_dict=True, verbose=0)
    daily = daily_tables(model, knowledge_batches(model, tft_output, train_rows))
    tables = latest_tables(daily)
    cache = KnowledgeCache(config.strategy, tables, version=str(version))
    tf.io.gfile.makedirs(record_dir)
    cache.save(output_dir)
    save_daily(daily, os.path.join(record_dir, DAILY_FILE))
    export.save_keras_model(model, os.path.join(record_dir, HEADS_DIR))
    record = {"version": int(version), "strategy": config.strategy, "width": config.knowledge_width(),
              "part_width": int(cache.width), "keys": {part: len(keys) for part, (keys, _) in tables.items()},
              "validation": {k: float(v) for k, v in scores.items()},
              "days": sorted(set(train_rows[F.DAY].tolist())), "config": json.loads(json.dumps(config.__dict__))}
    write_json(os.path.join(record_dir, CACHE_FILE), record)
    logging.info("GKC: version %s, %s", version, record["keys"])
    return record


def load_heads(record_dir: str) -> CacheableKnowledgeModel:
    """The knowledge heads a run trained (its `heads/`)."""
    model = CacheableKnowledgeModel.from_config(read_json(os.path.join(record_dir, HEADS_DIR, "config.json")))
    model.load_weights(os.path.join(record_dir, HEADS_DIR, "weights")).expect_partial()
    return model
