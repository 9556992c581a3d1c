"""Scores a pushed SavedModel on raw tf.Examples, importing nothing from this repository.

This is what a consumer of the exported model sees: a folder and a signature that
takes serialized tf.Examples. Prints a JSON report: per scenario and task, the
model's AUC and the oracle AUC (from the generator's true probabilities), with the
row counts. Conversion and cart are scored over clicked impressions, as they are
trained.

    python tests/standalone_predict.py SAVED_MODEL_DIR 'EXAMPLES_GLOB' [--max-rows N]
"""

import argparse
import glob
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

TASKS = ("click", "conversion", "cart")
ORACLE = {"click": "p_click", "conversion": "p_conversion", "cart": "p_cart"}


def _value(example, name):
    f = example.features.feature.get(name)
    if f is None:
        return None
    for kind in ("bytes_list", "int64_list", "float_list"):
        values = getattr(f, kind).value
        if len(values):
            v = values[0]
            return v.decode() if isinstance(v, bytes) else v
    return None


def _auc(labels, scores):
    labels = np.asarray(labels)
    if len(labels) == 0 or labels.min() == labels.max():
        return None
    return float(roc_auc_score(labels, scores))


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("saved_model")
    p.add_argument("examples", help="glob of gzipped TFRecord files of raw tf.Examples")
    p.add_argument("--max-rows", type=int, default=200_000)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--forbid-imports-from", nargs="*", default=[], help="report modules loaded from these folders")
    a = p.parse_args(argv)

    files = sorted(glob.glob(a.examples))
    if not files:
        print(f"no files match {a.examples}", file=sys.stderr)
        return 2
    serialized = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").take(a.max_rows):
        serialized.append(record.numpy())
    model = tf.saved_model.load(a.saved_model)
    serve = model.signatures["serving_default"]
    tasks = [t for t in TASKS if t in serve.structured_outputs]
    preds = {t: [] for t in tasks}
    for start in range(0, len(serialized), a.batch_size):
        out = serve(examples=tf.constant(serialized[start : start + a.batch_size]))
        for t in tasks:
            preds[t].append(out[t].numpy().reshape(-1))
    preds = {t: np.concatenate(v) for t, v in preds.items()}

    rows = [tf.train.Example.FromString(s) for s in serialized]
    scen = np.array([_value(r, "scenario_id") for r in rows])
    labels = {t: np.array([_value(r, t) for r in rows], dtype=np.int64) for t in TASKS}
    oracle = {t: np.array([_value(r, ORACLE[t]) if _value(r, ORACLE[t]) is not None else np.nan for r in rows],
                          dtype=np.float64) for t in TASKS}
    knowledge = None
    if "knowledge" in model.signatures:
        knowledge = model.signatures["knowledge"](examples=tf.constant(serialized[:8]))["knowledge"]

    report = {"rows": len(rows), "knowledge_width": None if knowledge is None else int(knowledge.shape[-1]),
              "tasks": tasks, "scenarios": {},
              # Names of the saved Keras model's variables, and how many variables the SavedModel holds.
              "variables": sorted(v.name for v in getattr(model, "model_variables", [])),
              "saved_variables": len(tf.train.list_variables(os.path.join(a.saved_model, "variables", "variables")))}
    for s in ["ALL"] + sorted(set(scen.tolist())):
        m = np.ones(len(rows), bool) if s == "ALL" else scen == s
        per = {"rows": int(m.sum())}
        for t in tasks:
            mt = m if t == "click" else m & (labels["click"] == 1)
            per[t] = {
                "rows": int(mt.sum()),
                "auc": _auc(labels[t][mt], preds[t][mt]),
                "oracle_auc": None if np.isnan(oracle[t][mt]).any() else _auc(labels[t][mt], oracle[t][mt]),
                "mean_prediction": float(preds[t][mt].mean()) if mt.any() else None,
                "mean_label": float(labels[t][mt].mean()) if mt.any() else None,
            }
        report["scenarios"][s] = per
    roots = [os.path.realpath(r) + os.sep for r in a.forbid_imports_from]
    report["modules_from_forbidden_folder"] = sorted(
        name for name, m in list(sys.modules.items())
        if getattr(m, "__file__", None) and any(os.path.realpath(m.__file__).startswith(r) for r in roots)
    )
    json.dump(report, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
