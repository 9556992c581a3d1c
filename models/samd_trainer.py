"""SAMD training run: the frozen KEEP teacher distilled into one student per scenario, in one process.

Called by the SamdTrainer component's executor (`components/samd_trainer`). Reads
the transformed examples, draws one batch per scenario per step (Algorithm 1: a
minor scenario gets as many batches as the super scenario, never starved), trains
all students and the meta network together, and exports every student as its own
standalone SavedModel (its raw features in, its tasks' probabilities out, its slice
of the transform graph inside, nothing of the teacher or the meta network).

custom_config:
    {"samd": {<SamdConfig field>: value}, "students": {scenario: {<StudentSpec field>: value}},
     "epochs": int, "patience": int, "scenarios": [subset of scenario ids]}

Each scenario's examples are filtered out of the split once and cached in memory
(`Dataset.cache`); at production scale, write per-scenario splits instead.
"""

from __future__ import annotations

import csv
import glob
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
from models.samd import SamdConfig, SamdDistiller, ScenarioTable, layer_widths
from models.students import build_student, default_student_specs, student_vocab_features

SCENARIO_ATTRIBUTES = ("exposure_position", "business_type", "item_family")


def load_teacher(keras_dir: str) -> KeepModel:
    with open(os.path.join(keras_dir, "config.json")) as f:
        teacher = KeepModel.from_config(json.load(f))
    teacher.load_weights(os.path.join(keras_dir, "weights")).expect_partial()
    return teacher


def read_scenarios(path: str):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def scenario_indices(tf_transform_output, scenario_ids) -> Dict[str, int]:
    """Transformed index of every scenario id (vocabulary position + 1, as models/preprocessing does)."""
    vocab = [v.decode() if isinstance(v, bytes) else v
             for v in tf_transform_output.vocabulary_by_name(F.VOCABULARY["scenario_id"])]
    missing = [s for s in scenario_ids if s not in vocab]
    if missing:
        raise ValueError(f"scenario(s) {missing} of scenarios.csv have no rows in the training data")
    return {s: vocab.index(s) + 1 for s in scenario_ids}


def per_scenario_batches(file_pattern, tf_transform_output, indices: Mapping[str, int], batch_size: int,
                         shuffle: bool):
    """A dataset whose elements are tuples: one feature batch per scenario, in `indices` order."""
    spec = tf_transform_output.transformed_feature_spec()
    files = sorted(glob.glob(file_pattern))
    if not files:
        raise FileNotFoundError(f"no transformed examples match {file_pattern}")
    rows = tf.data.TFRecordDataset(files, compression_type="GZIP")
    parts = []
    for sid, idx in indices.items():
        ds = rows.batch(4096).map(lambda x: tf.io.parse_example(x, spec)).unbatch()
        ds = ds.filter(lambda f, idx=idx: tf.equal(f["scenario_id"], idx)).cache().repeat()
        if shuffle:
            ds = ds.shuffle(10_000, seed=len(parts))
        parts.append(ds.batch(batch_size, drop_remainder=True))
    return tf.data.Dataset.zip(tuple(parts)).prefetch(2)


def run(train_pattern: str, eval_pattern: str, transform_graph: str, teacher_keras_dir: str, scenarios_csv: str,
        output_dir: str, report_dir: str, train_steps: int, eval_steps: int,
        neighbours: Optional[Mapping[str, list]] = None, custom: Optional[Mapping] = None) -> Dict:
    custom = dict(custom or {})
    seed_everything(custom)
    config = SamdConfig.from_dict(custom.get("samd"))
    tft_output = tft.TFTransformOutput(transform_graph)
    rows = read_scenarios(scenarios_csv)
    if custom.get("scenarios"):  # a subset (e.g. one scenario, to time separate runs)
        rows = [r for r in rows if r["scenario_id"] in set(custom["scenarios"])]
    roles = {r["scenario_id"]: r["role"] for r in rows}
    indices = scenario_indices(tft_output, list(roles))
    neighbours = {s: [n for n in v if n in roles][: config.top_g] for s, v in (neighbours or {}).items() if s in roles}
    table = ScenarioTable.build(rows, SCENARIO_ATTRIBUTES, neighbours)

    teacher = load_teacher(teacher_keras_dir)
    specs = default_student_specs(roles, custom.get("students"))
    students = {}
    for sid, spec in specs.items():
        sizes = {n: F.vocab_size(tft_output, n) for n in student_vocab_features(spec)}
        students[sid] = build_student(spec, sizes)

    train = per_scenario_batches(train_pattern, tft_output, indices, config.batch_size, shuffle=True)
    evaluation = per_scenario_batches(eval_pattern, tft_output, indices, config.batch_size, shuffle=False)
    sample = next(iter(train))
    teacher_widths = layer_widths(teacher.teacher_layers(sample[0]))
    student_widths = {sid: layer_widths(students[sid].layer_outputs(sample[i])) for i, sid in enumerate(roles)}
    distiller = SamdDistiller(config, teacher, students, table, teacher_widths, student_widths)
    distiller.compile(optimizer=tf_keras.optimizers.Adam(config.learning_rate))

    epochs = max(1, int(custom.get("epochs", 5)))
    steps = max(1, train_steps // epochs)
    logging.info("SAMD: %d students (%s), %d epochs of %d steps, strategy %s", len(students),
                 ", ".join(f"{s}:{spec.architecture}" for s, spec in specs.items()), epochs, steps, config.strategy)
    t0 = time.time()
    history = distiller.fit(
        train, epochs=epochs, steps_per_epoch=steps, validation_data=evaluation, validation_steps=max(1, eval_steps),
        callbacks=[tf_keras.callbacks.EarlyStopping(monitor="val_loss_ce", mode="min",
                                                    patience=int(custom.get("patience", 2)),
                                                    restore_best_weights=True, verbose=1)],
        verbose=2,
    )
    train_seconds = time.time() - t0
    budget = budget_record(distiller, history, config.batch_size * len(students), steps, monitor="val_loss_ce",
                           mode="min")
    # What is served: the students alone (the meta network and projections stay behind).
    budget["parameters"] = int(sum(np.prod(v.shape) for s in students.values() for v in s.trainable_variables))
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
