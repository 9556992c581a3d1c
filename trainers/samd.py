"""SAMD training run: the frozen KEEP teacher distilled into one student per scenario, in one process.

Called by the SamdTrainer component's executor (`components/samd_trainer`). Reads
the transformed examples, draws one batch per scenario per step (Algorithm 1; every
scenario is in every step, never starved), trains all students and the meta network
together, and exports every student as its own standalone SavedModel (its raw
features in, its tasks' probabilities out, its slice of the transform graph inside,
nothing of the teacher or the meta network).

Batches: with `sampling="sqrt"` scenario i's batch is N·batch_size·sqrt(n_i)/Σ_j sqrt(n_j)
(at least MIN_BATCH), n_i its training rows; with "uniform", batch_size each.
Epochs (trainers.epochs): one pass is as many steps as put every training row through once
on average; at most `epochs` of them. Early stopping: per student, on its own
validation click AUC (models.samd.PerStudentEarlyStopping).
The top-G neighbours are re-ranked from the similarity matrix (SamdConfig.similarity).

custom_config: a `trainers.config.SamdTrainerConfig`.

Memory is bounded: each split is streamed once into one local file per scenario
(split_by_scenario), and each scenario's batches are read from its file with tf.data
(shuffled through a buffer of at most SHUFFLE_BUFFER rows), never the split in memory.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras
from absl import logging

from models import export
from models import features as F
from models.artifact_io import read_json, write_json
from models.keep import KeepModel
from models.samd import (PerStudentEarlyStopping, SamdConfig, SamdDistiller, ScenarioTable, layer_widths,
                         rank_neighbours, teacher_embedding_init, teacher_tasks)
from models.students import build_student, default_student_specs, student_vocab_features
from schemas import scenarios as scenario_table
from trainers.config import SamdTrainerConfig
from trainers.epochs import epoch_steps
from trainers.records import budget_record, learning_curves, seed_everything, write_training_record

SCENARIO_ATTRIBUTES = ("exposure_position", "business_type", "item_family")


MIN_BATCH = 32  # the smallest per-scenario batch under sqrt sampling
SHUFFLE_BUFFER = 200_000  # rows; a scenario with fewer is fully shuffled every pass


def load_teacher(keras_dir: str, sample_features) -> KeepModel:
    """The KEEP model saved in `keras_dir`, every variable restored (built on `sample_features` first).

    Raises ValueError naming the folder if the checkpoint lacks any of the model's
    variables (a different architecture, a truncated copy): a half-restored teacher
    would distil its random initialisation.
    """
    teacher = KeepModel.from_config(read_json(os.path.join(keras_dir, "config.json")))
    teacher(sample_features, training=False)  # create every variable, so the check below sees them all
    try:
        status = teacher.load_weights(os.path.join(keras_dir, "weights"))
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError) as e:
        raise ValueError(f"{keras_dir}: the teacher checkpoint does not restore every variable of the model "
                         f"in its config.json: {str(e).splitlines()[0]}") from None
    status.expect_partial()  # the optimizer's slots are in the checkpoint, not needed here
    return teacher


def read_scenarios(path: str):
    """The rows of a scenarios.csv (a ScenarioTable artifact's), in order."""
    return list(scenario_table.read_scenarios(path).values())


def split_by_scenario(file_pattern: str, spec: Mapping, indices: Mapping[str, int], out_dir: str,
                      batch_size: int = 8192) -> Dict[str, Tuple[str, int]]:
    """{scenario: (its rows' TFRecord file under out_dir, row count)}: one streaming pass over a split.

    Each scenario then reads its own file (per_scenario_batches): the split is never held
    in memory, and the files are read once here, not once per scenario per epoch.
    """
    files = sorted(tf.io.gfile.glob(file_pattern))
    if not files:
        raise FileNotFoundError(f"no transformed examples match {file_pattern}")
    tf.io.gfile.makedirs(out_dir)
    shards = {sid: (os.path.join(out_dir, f"{sid}.tfrecord"), 0) for sid in indices}
    writers = {sid: tf.io.TFRecordWriter(path) for sid, (path, _) in shards.items()}
    key = {"scenario_id": spec["scenario_id"]}
    counts = dict.fromkeys(indices, 0)
    try:
        for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(batch_size):
            scenario = tf.io.parse_example(batch, key)["scenario_id"].numpy().reshape(len(batch), -1)[:, 0]
            rows = batch.numpy()
            for sid, idx in indices.items():
                mine = rows[scenario == idx]
                for row in mine:
                    writers[sid].write(row)
                counts[sid] += len(mine)
    finally:
        for w in writers.values():
            w.close()
    return {sid: (path, counts[sid]) for sid, (path, _) in shards.items()}


def batch_sizes(rows: Mapping[str, int], batch_size: int, sampling: str) -> Dict[str, int]:
    """Per-scenario batch: equal ("uniform"), or ∝ sqrt(rows) with the same total ("sqrt")."""
    if sampling == "uniform":
        return {sid: batch_size for sid in rows}
    roots = {sid: np.sqrt(max(n, 1)) for sid, n in rows.items()}
    total = batch_size * len(rows)
    return {sid: max(MIN_BATCH, int(round(total * r / sum(roots.values())))) for sid, r in roots.items()}


def per_scenario_batches(shards: Mapping[str, Tuple[str, int]], spec: Mapping, batch_size, shuffle: bool,
                         seed: int = 0, shuffle_buffer: int = SHUFFLE_BUFFER):
    """A dataset whose elements are tuples: one parsed feature batch per scenario, in `shards` order.

    `shards`: split_by_scenario's files. `batch_size`: one size for all, or {scenario:
    size}. Each scenario's rows repeat; with `shuffle`, in a new order every pass, through a
    buffer of min(its rows, `shuffle_buffer`) (a full shuffle below that size).
    """
    parts = []
    for k, (sid, (path, count)) in enumerate(shards.items()):
        ds = tf.data.TFRecordDataset(path)
        if shuffle:
            ds = ds.shuffle(max(1, min(count, shuffle_buffer)), seed=seed + k, reshuffle_each_iteration=True)
        size = batch_size[sid] if isinstance(batch_size, Mapping) else batch_size
        parts.append(ds.repeat().batch(size, drop_remainder=True).map(
            lambda x: tf.io.parse_example(x, spec), num_parallel_calls=tf.data.AUTOTUNE))
    return tf.data.Dataset.zip(tuple(parts)).prefetch(2)


def scenario_batches(train_pattern: str, eval_pattern: str, spec: Mapping, indices: Mapping[str, int],
                     config: SamdConfig, scratch: str, seed: int = 0):
    """(train, validation, training rows per scenario, batch per scenario): both splits written once into
    one file per scenario under `scratch` (split_by_scenario), then read as per-scenario batches."""
    train_shards = split_by_scenario(train_pattern, spec, indices, os.path.join(scratch, "train"))
    eval_shards = split_by_scenario(eval_pattern, spec, indices, os.path.join(scratch, "validation"))
    for split, pattern, shards in (("training", train_pattern, train_shards),
                                   ("validation", eval_pattern, eval_shards)):
        empty = [s for s, (_, c) in shards.items() if c == 0]
        if empty:
            raise ValueError(f"scenario(s) {empty} have no rows in the {split} split {pattern}")
    counts = {sid: n for sid, (_, n) in train_shards.items()}
    sizes = batch_sizes(counts, config.batch_size, config.sampling)
    train = per_scenario_batches(train_shards, spec, sizes, shuffle=True, seed=seed)
    evaluation = per_scenario_batches(eval_shards, spec, sizes, shuffle=False)
    return train, evaluation, counts, sizes


def run(train_pattern: str, eval_pattern: str, transform_graph: str, teacher_keras_dir: str, scenarios_csv: str,
        output_dir: str, report_dir: str, train_steps: int, eval_steps: int,
        similarity: Optional[Mapping] = None, custom: Optional[Mapping] = None) -> Dict:
    """`similarity`: the ScenarioSimilarity document (scenarios, matrix, top_g), or None."""
    trainer = SamdTrainerConfig.from_custom_config(custom)
    seed = seed_everything(trainer.seed)
    config = SamdConfig.from_dict(trainer.samd)
    tft_output = tft.TFTransformOutput(transform_graph)
    rows = read_scenarios(scenarios_csv)
    if trainer.scenarios:  # a subset (e.g. one scenario, to time separate runs)
        rows = [r for r in rows if r["scenario_id"] in set(trainer.scenarios)]
    roles = {r["scenario_id"]: r["role"] for r in rows}
    indices = F.scenario_indices(tft_output, list(roles))
    neighbours = {}
    if similarity:
        # Re-ranked among this run's scenarios, by the configured normalisation.
        order = [similarity["scenarios"].index(s) for s in roles]
        matrix = np.asarray(similarity["matrix"])[np.ix_(order, order)]
        neighbours = rank_neighbours(list(roles), matrix, config.top_g, config.similarity)
    table = ScenarioTable.build(rows, SCENARIO_ATTRIBUTES, neighbours)

    specs = default_student_specs(roles, trainer.students)
    students = {}
    for sid, student_spec in specs.items():
        vocab = {n: F.vocab_size(tft_output, n) for n in student_vocab_features(student_spec)}
        students[sid] = build_student(student_spec, vocab)

    feature_spec = tft_output.transformed_feature_spec()
    # Local scratch: the per-scenario files are a working copy, removed when training ends.
    with tempfile.TemporaryDirectory(prefix="samd_scenarios_") as scratch:
        train, evaluation, counts, sizes = scenario_batches(train_pattern, eval_pattern, feature_spec, indices, config,
                                                            scratch, seed)
        sample = next(iter(train))
        teacher = load_teacher(teacher_keras_dir, sample[0])
        teacher_widths = layer_widths(teacher.teacher_layers(sample[0], tasks=teacher_tasks(config)))
        student_widths = {sid: layer_widths(students[sid].layer_outputs(sample[i])) for i, sid in enumerate(indices)}
        initialised = teacher_embedding_init(students, teacher) if config.teacher_embeddings else {}
        distiller = SamdDistiller(config, teacher, students, table, teacher_widths, student_widths)
        distiller.compile(optimizer=tf_keras.optimizers.Adam(config.learning_rate))

        # One pass: every training row once on average (the sqrt sampling draws small scenarios more often).
        steps, epochs = epoch_steps(sum(counts.values()), sum(sizes.values()), train_steps, trainer.epochs)
        logging.info("SAMD: %d students (%s), %d epochs of %d steps, strategy %s, batches %s", len(students),
                     ", ".join(f"{s}:{spec.architecture}" for s, spec in specs.items()), epochs, steps,
                     config.strategy, sizes)
        stopping = PerStudentEarlyStopping(students, patience=trainer.patience)
        t0 = time.time()
        # Cut to eval_steps, so Keras restarts it each epoch: the same validation rows every time (a
        # repeating set was read on from where the previous epoch stopped).
        history = distiller.fit(
            train, epochs=epochs, steps_per_epoch=steps, validation_data=evaluation.take(max(1, eval_steps)),
            callbacks=[stopping], verbose=2,
        )
        train_seconds = time.time() - t0
    budget = budget_record(distiller, history, sum(sizes.values()), steps, monitor="val_loss_ce", mode="min")
    budget["best_epoch"] = stopping.best_epochs  # each student's own
    # What is served: the students alone (the meta network and projections stay behind).
    budget["parameters"] = int(sum(np.prod(v.shape) for s in students.values() for v in s.trainable_variables))
    tf.io.gfile.makedirs(output_dir)
    write_training_record(output_dir, {"model": trainer.model_name, "seconds": round(train_seconds, 2), **budget})

    for sid, student in students.items():
        export.export_saved_model(
            student, tft_output, os.path.join(output_dir, sid),
            outputs={"serving_default": specs[sid].tasks}, model_name=f"{trainer.model_name}_{sid}", features=specs[sid].features,
        )
    report = distiller.transfer_report()
    report.update({
        "train_seconds": round(train_seconds, 2),
        "teacher_layers": teacher_widths,
        "student_layers": student_widths,
        "students": {sid: {"architecture": s.architecture, "features": list(s.features), "tasks": list(s.tasks)}
                     for sid, s in specs.items()},
        "neighbours": {sid: [table.scenario_ids[j] for j in table.top_g[i]] for i, sid in enumerate(table.scenario_ids)},
        "similarity": config.similarity,
        "rows": counts, "batch_sizes": sizes, "teacher_embeddings": initialised,
        "best_epochs": stopping.best_epochs, "best_val_auc": stopping.best,
        "history": learning_curves(history),
    })
    write_json(os.path.join(report_dir, "transfer.json"), report)
    arrays = {}
    for sid, r in report["scenarios"].items():
        for key in ("transfer_weights", "scenario_representation", "cluster_representation", "cluster_assignment"):
            if r[key] is not None:
                arrays[f"{sid}/{key}"] = np.asarray(r[key])
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with tf.io.gfile.GFile(os.path.join(report_dir, "transfer.npz"), "wb") as f:
        f.write(buffer.getvalue())
    return report
