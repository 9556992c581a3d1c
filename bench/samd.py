"""Benchmark: SAMD students vs the same students trained alone, and joint vs separate wall time.

Uses the artifacts of a finished pipeline run (transform graph, transformed and raw
examples, the KEEP teacher, the scenario similarity):

    .venv/bin/python -m bench.samd --run runs --data data/default [--steps 600]

1. SAMD (strategy meta): all students in one run, distilled from KEEP.
2. Alone: the same run with distill_weight 0 — each student is then trained on its
   own scenario's batches only (no shared parameter reaches it): the paper's
   "trained alone" baseline with the same steps and batches.
3. Separate: N runs of one scenario each (distillation on), timed, against the
   joint run's wall time.
Per-scenario AUC is computed on the test split's raw examples through each exported
student (sklearn). Writes bench/results/samd.json.
"""

import argparse
import glob
import json
import os
import platform
import shutil
import tempfile
import time

import numpy as np
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from models import samd_trainer

GROUPS = ("super", "homogeneous", "heterogeneous", "minor")


def _artifacts(run):
    root = os.path.join(run, "pipelines", "keep_samd")
    one = lambda pattern: sorted(glob.glob(os.path.join(root, pattern)))[-1]  # noqa: E731
    examples = one("Transform/transformed_examples/*")
    sim = glob.glob(os.path.join(root, "ScenarioSimilarity/similarity/*/similarity.json"))
    return {
        "transform_graph": one("Transform/transform_graph/*"),
        "train": os.path.join(examples, "Split-train", "*"),
        "validation": os.path.join(examples, "Split-validation", "*"),  # early stopping
        "raw_test": os.path.join(one("CsvExampleGen/examples/*"), "Split-test", "*"),  # scoring: the test day
        "teacher": one("KeepTrainer/model/*/Format-Keras"),
        "similarity": json.load(open(sorted(sim)[-1])) if sim else None,
    }


def _eval_rows(pattern):
    rows = [r.numpy() for r in tf.data.TFRecordDataset(sorted(glob.glob(pattern)), compression_type="GZIP")]
    scen = np.array([tf.train.Example.FromString(r).features.feature["scenario_id"].bytes_list.value[0].decode()
                     for r in rows])
    click = np.array([tf.train.Example.FromString(r).features.feature["click"].int64_list.value[0] for r in rows])
    return rows, scen, click


def _student_aucs(model_dir, rows, scen, click):
    out = {}
    for sid in sorted(os.listdir(model_dir)):
        m = scen == sid
        serve = tf.saved_model.load(os.path.join(model_dir, sid)).signatures["serving_default"]
        pred = np.concatenate([serve(examples=tf.constant([rows[i] for i in np.flatnonzero(m)[s:s + 1024]]))["click"]
                               .numpy() for s in range(0, int(m.sum()), 1024)])
        out[sid] = float(roc_auc_score(click[m], pred)) if len(set(click[m])) == 2 else None
    return out


def _train(a, art, scenarios_csv, custom, out_dir):
    t0 = time.perf_counter()
    report = samd_trainer.run(art["train"], art["validation"], art["transform_graph"], art["teacher"], scenarios_csv,
                              out_dir, out_dir + "_report", a.steps, 10, art["similarity"], custom)
    return report, time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--run", default="runs")
    p.add_argument("--data", default="data/default")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--skip-separate", action="store_true")
    a = p.parse_args(argv)
    art = _artifacts(a.run)
    scenarios_csv = os.path.join(a.data, "scenarios.csv")
    roles = {r["scenario_id"]: r["role"] for r in samd_trainer.read_scenarios(scenarios_csv)}
    rows, scen, click = _eval_rows(art["raw_test"])
    tmp = tempfile.mkdtemp()
    base = {"epochs": a.epochs, "patience": a.epochs}
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "steps": a.steps, "runs": {}}
    try:
        for name, samd in (("samd", {}), ("alone", {"distill_weight": 0.0})):
            report, wall = _train(a, art, scenarios_csv, {**base, "samd": samd}, os.path.join(tmp, name))
            results["runs"][name] = {"wall_seconds": round(wall, 1), "train_seconds": report["train_seconds"],
                                     "auc": _student_aucs(os.path.join(tmp, name), rows, scen, click)}
            print(f"{name}: {wall:.0f}s", json.dumps(results["runs"][name]["auc"]))
        if not a.skip_separate:
            total = 0.0
            for sid in roles:
                _, wall = _train(a, art, scenarios_csv, {**base, "scenarios": [sid]}, os.path.join(tmp, f"sep_{sid}"))
                total += wall
            results["runs"]["separate"] = {"wall_seconds": round(total, 1)}
            print(f"separate: {total:.0f}s for {len(roles)} runs vs joint {results['runs']['samd']['wall_seconds']}s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    groups = {}
    for g in GROUPS:
        ids = [s for s, r in roles.items() if r == g]
        groups[g] = {name: float(np.mean([results["runs"][name]["auc"][s] for s in ids
                                          if results["runs"][name]["auc"].get(s) is not None]))
                     for name in ("samd", "alone")} if ids else None
    results["groups"] = groups
    print("groups:", json.dumps(groups))
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    with open(os.path.join(os.path.dirname(__file__), "results", "samd.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
