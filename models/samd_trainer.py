"""SAMD training run: the frozen KEEP teacher distilled into one student per scenario, in one process.

Called by the SamdTrainer component's executor (`components/samd_trainer`). Reads
the transformed examples, draws one batch per scenario per step (Algorithm 1; every
scenario is in every step, never starved), trains all students and the meta network
together, and exports every student as its own standalone SavedModel (its raw
features in, its tasks' probabilities out, its slice of the transform graph inside,
nothing of the teacher or the meta network).

Batches: with `sampling="sqrt"` scenario i's batch is N·batch_size·sqrt(n_i)/Σ_j sqrt(n_j)
(at least MIN_BATCH), n_i its training rows; with "uniform", batch_size each.
Early stopping: per student, on its own validation click AUC (models.samd.PerStudentEarlyStopping).
The top-G neighbours are re-ranked from the similarity matrix (SamdConfig.similarity).

custom_config:
    {"samd": {<SamdConfig field>: value}, "students": {scenario: {<StudentSpec field>: value}},
     "epochs": int, "patience": int, "scenarios": [subset of scenario ids]}

Each split is parsed once and held in memory, each scenario's rows sliced out of it;
at production scale, write per-scenario splits instead.
"""

from __future__ import annotations

import csv
import json
import os
import time
from typing import Dict, Mapping, Optional

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras
from absl import logging

from models import export
from models import features as F
from models.keep import KeepModel
from models.multitask import budget_record, seed_everything, write_training_record
from models.samd import (PerStudentEarlyStopping, SamdConfig, SamdDistiller, ScenarioTable, layer_widths,
                         rank_neighbours, teacher_tasks)
from models.students import build_student, default_student_specs, student_vocab_features

SCENARIO_ATTRIBUTES = ("exposure_position", "business_type", "item_family")


MIN_BATCH = 32  # the smallest per-scenario batch under sqrt sampling


def load_teacher(keras_dir: str, sample_features) -> KeepModel:
    """The KEEP model saved in `keras_dir`, every variable restored (built on `sample_features` first).

    Raises ValueError naming the folder if the checkpoint lacks any of the model's
    variables (a different architecture, a truncated copy): a half-restored teacher
    would distil its random initialisation.
    """
    with open(os.path.join(keras_dir, "config.json")) as f:
        teacher = KeepModel.from_config(json.load(f))
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
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load_split(file_pattern, tf_transform_output) -> Dict[str, np.ndarray]:
    """Every transformed row of a split, parsed once, as {feature: array} (files in sorted order)."""
    files = sorted(tf.io.gfile.glob(file_pattern))
    if not files:
        raise FileNotFoundError(f"no transformed examples match {file_pattern}")
    spec = tf_transform_output.transformed_feature_spec()
    parts = list(tf.data.TFRecordDataset(files, compression_type="GZIP").batch(8192)
                 .map(lambda x: tf.io.parse_example(x, spec)).as_numpy_iterator())
    return {k: np.concatenate([p[k] for p in parts]) for k in spec}


def scenario_rows(rows: Mapping[str, np.ndarray], indices: Mapping[str, int]) -> Dict[str, int]:
    """Rows of each scenario."""
    scenario = np.asarray(rows["scenario_id"]).reshape(-1)
    return {sid: int((scenario == idx).sum()) for sid, idx in indices.items()}


def batch_sizes(rows: Mapping[str, int], batch_size: int, sampling: str) -> Dict[str, int]:
    """Per-scenario batch: equal ("uniform"), or ∝ sqrt(rows) with the same total ("sqrt")."""
    if sampling == "uniform":
        return {sid: batch_size for sid in rows}
    roots = {sid: np.sqrt(max(n, 1)) for sid, n in rows.items()}
    total = batch_size * len(rows)
    return {sid: max(MIN_BATCH, int(round(total * r / sum(roots.values())))) for sid, r in roots.items()}


def per_scenario_batches(rows: Mapping[str, np.ndarray], indices: Mapping[str, int], batch_size, shuffle: bool,
                         seed: int = 0):
    """A dataset whose elements are tuples: one feature batch per scenario, in `indices` order.

    `rows`: load_split's arrays (held in memory: each scenario's rows are sliced out once,
    where filtering the files would read them once per scenario). `batch_size`: one size
    for all, or {scenario: size}. Each scenario's rows repeat; with `shuffle`, in a new
    order every pass.
    """
    scenario = np.asarray(rows["scenario_id"]).reshape(-1)
    parts = []
    for k, (sid, idx) in enumerate(indices.items()):
        mine = scenario == idx
        ds = tf.data.Dataset.from_tensor_slices({name: values[mine] for name, values in rows.items()})
        if shuffle:
            ds = ds.shuffle(int(mine.sum()), seed=seed + k, reshuffle_each_iteration=True)
        size = batch_size[sid] if isinstance(batch_size, Mapping) else batch_size
        parts.append(ds.repeat().batch(size, drop_remainder=True))
    return tf.data.Dataset.zip(tuple(parts)).prefetch(2)


def run(train_pattern: str, eval_pattern: str, transform_graph: str, teacher_keras_dir: str, scenarios_csv: str,
        output_dir: str, report_dir: str, train_steps: int, eval_steps: int,
        similarity: Optional[Mapping] = None, custom: Optional[Mapping] = None) -> Dict:
    """`similarity`: the ScenarioSimilarity document (scenarios, matrix, top_g), or None."""
    custom = dict(custom or {})
    seed_everything(custom)
    config = SamdConfig.from_dict(custom.get("samd"))
    tft_output = tft.TFTransformOutput(transform_graph)
    rows = read_scenarios(scenarios_csv)
    if custom.get("scenarios"):  # a subset (e.g. one scenario, to time separate runs)
        rows = [r for r in rows if r["scenario_id"] in set(custom["scenarios"])]
    roles = {r["scenario_id"]: r["role"] for r in rows}
    indices = F.scenario_indices(tft_output, list(roles))
    neighbours = {}
    if similarity:
        # Re-ranked among this run's scenarios, by the configured normalisation.
        order = [similarity["scenarios"].index(s) for s in roles]
        matrix = np.asarray(similarity["matrix"])[np.ix_(order, order)]
        neighbours = rank_neighbours(list(roles), matrix, config.top_g, config.similarity)
    table = ScenarioTable.build(rows, SCENARIO_ATTRIBUTES, neighbours)

    specs = default_student_specs(roles, custom.get("students"))
    students = {}
    for sid, spec in specs.items():
        sizes = {n: F.vocab_size(tft_output, n) for n in student_vocab_features(spec)}
        students[sid] = build_student(spec, sizes)

    train_rows, eval_rows = load_split(train_pattern, tft_output), load_split(eval_pattern, tft_output)
    counts = scenario_rows(train_rows, indices)
    for split, pattern, n in (("training", train_pattern, counts), ("validation", eval_pattern,
                                                                     scenario_rows(eval_rows, indices))):
        empty = [s for s, c in n.items() if c == 0]
        if empty:
            raise ValueError(f"scenario(s) {empty} have no rows in the {split} split {pattern}")
    sizes = batch_sizes(counts, config.batch_size, config.sampling)
    seed = int(custom.get("seed") or 0)
    train = per_scenario_batches(train_rows, indices, sizes, shuffle=True, seed=seed)
    evaluation = per_scenario_batches(eval_rows, indices, sizes, shuffle=False)
    sample = next(iter(train))
    teacher = load_teacher(teacher_keras_dir, sample[0])
    teacher_widths = layer_widths(teacher.teacher_layers(sample[0], tasks=teacher_tasks(config)))
    student_widths = {sid: layer_widths(students[sid].layer_outputs(sample[i])) for i, sid in enumerate(roles)}
    distiller = SamdDistiller(config, teacher, students, table, teacher_widths, student_widths)
    distiller.compile(optimizer=tf_keras.optimizers.Adam(config.learning_rate))

    epochs = max(1, int(custom.get("epochs", 5)))
    steps = max(1, train_steps // epochs)
    logging.info("SAMD: %d students (%s), %d epochs of %d steps, strategy %s, batches %s", len(students),
                 ", ".join(f"{s}:{spec.architecture}" for s, spec in specs.items()), epochs, steps, config.strategy,
                 sizes)
    stopping = PerStudentEarlyStopping(students, patience=int(custom.get("patience", 2)))
    t0 = time.time()
    history = distiller.fit(
        train, epochs=epochs, steps_per_epoch=steps, validation_data=evaluation, validation_steps=max(1, eval_steps),
        callbacks=[stopping], verbose=2,
    )
    train_seconds = time.time() - t0
    budget = budget_record(distiller, history, sum(sizes.values()), steps, monitor="val_loss_ce", mode="min")
    budget["best_epoch"] = stopping.best_epochs  # each student's own
    # What is served: the students alone (the meta network and projections stay behind).
    budget["parameters"] = int(sum(np.prod(v.shape) for s in students.values() for v in s.trainable_variables))
    tf.io.gfile.makedirs(output_dir)
    write_training_record(output_dir, {"model": "samd", "seconds": round(train_seconds, 2), **budget})

    for sid, student in students.items():
        export.export_saved_model(
            student, tft_output, os.path.join(output_dir, sid),
            outputs={"serving_default": specs[sid].tasks}, model_name=f"samd_{sid}", features=specs[sid].features,
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
        "rows": counts, "batch_sizes": sizes,
        "best_epochs": stopping.best_epochs, "best_val_auc": stopping.best,
        "history": {k: [float(x) for x in v] for k, v in history.history.items()},
    })
    os.makedirs(report_dir, exist_ok=True)
    with open(os.path.join(report_dir, "transfer.json"), "w") as f:
        json.dump(report, f, indent=1)
    arrays = {}
    for sid, r in report["scenarios"].items():
        for key in ("transfer_weights", "scenario_representation", "cluster_representation", "cluster_assignment"):
            if r[key] is not None:
                arrays[f"{sid}/{key}"] = np.asarray(r[key])
    np.savez(os.path.join(report_dir, "transfer.npz"), **arrays)
    return report
