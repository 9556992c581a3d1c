"""Metrics of a model on the raw eval split, per scenario and task.

The eval split is ExampleGen's output (raw tf.Examples), scored through the
exported SavedModel exactly as a serving client would. Per slice (ALL and each
scenario) and task:

- `auc`: scikit-learn's ROC AUC;
- `gauc`: user-weighted AUC over the users that have both labels in the slice
  (KEEP's and SAMD's GAUC), each user's AUC by scikit-learn, weighted by the
  user's impressions;
- `logloss`, `calibration` (mean prediction / mean label), `oracle_auc` (the AUC
  of the generator's true probabilities, when the data carries them).

Click is scored over impressions; conversion and cart over clicked impressions,
as they are trained. A metric that cannot be computed (one class only) is None.
"""

import glob
import os
from typing import Dict, Iterable, List, Optional

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

TASKS = ("click", "conversion", "cart")
ORACLE = {"click": "p_click", "conversion": "p_conversion", "cart": "p_cart"}
ALL = "ALL"
GROUPS = ("homogeneous", "heterogeneous", "minor")  # SAMD Table 1's groups (roles in scenarios.csv)


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


def eval_files(examples_uri: str, split: str = "eval") -> List[str]:
    files = sorted(glob.glob(os.path.join(examples_uri, f"Split-{split}", "*")))
    if not files:
        raise FileNotFoundError(f"{examples_uri}: no Split-{split} files to evaluate on")
    return files


def load_examples(files: Iterable[str]):
    """Serialized rows and a column table (scenario, user, labels, true probabilities)."""
    import tensorflow as tf

    rows = [r.numpy() for r in tf.data.TFRecordDataset(list(files), compression_type="GZIP")]
    exs = [tf.train.Example.FromString(r) for r in rows]
    table = {"scenario": np.array([_value(e, "scenario_id") for e in exs], dtype=object),
             "user": np.array([str(_value(e, "user_id")) for e in exs], dtype=object),
             "item": np.array([str(_value(e, "item_id")) for e in exs], dtype=object),
             "category": np.array([str(_value(e, "category_id")) for e in exs], dtype=object)}
    for t in TASKS:
        table[t] = np.array([_value(e, t) or 0 for e in exs], dtype=np.int64)
        oracle = [_value(e, ORACLE[t]) for e in exs]
        if all(v is not None for v in oracle):
            table[ORACLE[t]] = np.array(oracle, dtype=np.float64)
    return np.array(rows, dtype=object), table


def score(signature, rows, tasks=TASKS, batch_size: int = 2048, extra=None) -> Dict[str, np.ndarray]:
    """Probabilities per task from a `serving_default` signature on serialized tf.Examples.

    `extra`: {input name: array aligned with rows} for inputs besides `examples`
    (a KEEP-plugged model's `knowledge`).
    """
    import tensorflow as tf

    out = {t: [] for t in tasks}
    for s in range(0, len(rows), batch_size):
        more = {k: tf.constant(v[s:s + batch_size]) for k, v in (extra or {}).items()}
        res = signature(examples=tf.constant(list(rows[s:s + batch_size])), **more)
        for t in tasks:
            out[t].append(res[t].numpy().reshape(-1))
    return {t: np.concatenate(v) if v else np.zeros(0) for t, v in out.items()}


def auc(labels, scores) -> Optional[float]:
    labels = np.asarray(labels)
    if labels.size == 0 or labels.min() == labels.max():
        return None
    return float(roc_auc_score(labels, scores))


def gauc(users, labels, scores) -> Optional[float]:
    """Impression-weighted mean of per-user AUC over users with both labels."""
    users, labels, scores = np.asarray(users), np.asarray(labels), np.asarray(scores)
    order = np.argsort(users, kind="stable")
    users, labels, scores = users[order], labels[order], scores[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    total = weight = 0.0
    for s, e in zip(starts, ends):
        value = auc(labels[s:e], scores[s:e])
        if value is not None:  # a single-class user says nothing about ranking
            total += (e - s) * value
            weight += e - s
    return total / weight if weight else None


def slice_metrics(table, pred, mask, task) -> Dict:
    m = mask if task == "click" else mask & (table["click"] == 1)
    y, p = table[task][m], np.clip(pred[task][m], 1e-7, 1 - 1e-7)
    out = {"rows": int(m.sum()), "positives": int(y.sum()), "auc": auc(y, p), "gauc": gauc(table["user"][m], y, p),
           "logloss": float(log_loss(y, p, labels=[0, 1])) if len(y) else None,
           "calibration": float(p.mean() / y.mean()) if len(y) and y.mean() > 0 else None,
           "oracle_auc": auc(y, table[ORACLE[task]][m]) if ORACLE[task] in table else None}
    return out


def evaluate(table, pred, tasks=TASKS, covered=None) -> Dict[str, Dict[str, Dict]]:
    """{slice: {task: metrics}} for ALL and each scenario.

    `covered`: the rows the model scored, one boolean mask for all tasks or
    {task: mask} (a SAMD student scores only its own scenario, and a single-task
    student only click); slices and tasks with no covered row are left out.
    """
    n = len(table["scenario"])
    if covered is None:
        covered = np.ones(n, bool)
    if not isinstance(covered, dict):
        covered = {t: covered for t in tasks}
    anywhere = np.zeros(n, bool)
    for t in tasks:
        anywhere |= covered.get(t, np.zeros(n, bool))
    result = {}
    for s in [ALL] + sorted(set(table["scenario"][anywhere].tolist())):
        in_slice = np.ones(n, bool) if s == ALL else table["scenario"] == s
        result[s] = {t: slice_metrics(table, pred, in_slice & covered[t], t) for t in tasks
                     if t in pred and t in covered and (in_slice & covered[t]).any()}
    return result


def group_means(per_slice: Dict, roles: Dict[str, str], metric: str = "auc") -> Dict[str, Dict[str, float]]:
    """Mean of a metric over each role group's scenarios (SAMD Table 1), per task."""
    out = {}
    for group in GROUPS:
        members = [s for s, r in roles.items() if r == group and s in per_slice]
        if not members:
            continue
        out[group] = {}
        for t in TASKS:
            values = [per_slice[s][t][metric] for s in members if t in per_slice[s]
                      and per_slice[s][t][metric] is not None]
            out[group][t] = float(np.mean(values)) if values else None
    return out


def rela_impr(model_auc: Optional[float], base_auc: Optional[float]) -> Optional[float]:
    """ADL's RelaImpr, in percent: ((AUC(model) - 0.5) / (AUC(base) - 0.5) - 1) * 100."""
    if model_auc is None or base_auc is None or base_auc == 0.5:
        return None
    return ((model_auc - 0.5) / (base_auc - 0.5) - 1.0) * 100.0
