"""The linear floor's optimum: scikit-learn's LogisticRegression on the floor's features.

    .venv/bin/python -m bench.floor [--base /tmp/keep_samd_quality] [--Cs 0.01 0.03 ...]

Reads the Transform that `bench.quality` left in `--base` (rich preset, time split:
train days 0-2, validation day 3, test day 4) and fits, per task, one L2-regularised
logistic regression on exactly what `models/linear.py` sees: the one-hot ids of
`LinearConfig.features` and its crosses, each cross one column per id pair met in the
train days (exact, where the pipeline's floor hashes). Conversion and cart are fitted
and scored over clicked rows, as every model is (`models.multitask.TASK_POPULATION`).
`C` is picked per task on the validation day; the test day is scored once, with that C.

The result (bench/results/floor.json) is the reference the pipeline's floor must come
within 0.005 of (issue: "the floor fitted to its optimum").
"""

import argparse
import os
import platform
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from bench import record

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "floor.json")
SPLITS = ("train", "validation", "test")  # the transformed splits' folder names: Split-<name>
DEFAULT_CS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


def load_splits(base: str, splits: Sequence[str] = SPLITS,
                columns: Optional[Sequence[str]] = None) -> Tuple[Dict[str, Dict[str, np.ndarray]], object]:
    """({split: {feature: array}} of the transformed examples under `base` (`columns` only, when given),
    the transform output)."""
    import tensorflow_transform as tft

    from bench.quality import required_transform
    from trainers.transformed_data import load_transformed

    head = required_transform(os.path.join(base, "transform"))
    tft_output = tft.TFTransformOutput(head.transform_graph)
    return {s: load_transformed(os.path.join(head.transformed_examples, f"Split-{s}", "*"), tft_output, columns)
            for s in splits}, tft_output


def design(splits: Dict[str, Dict[str, np.ndarray]], features: Sequence[str],
           crosses: Sequence[Sequence[str]]) -> Dict[str, "object"]:
    """{split: CSR matrix}: one column per train-day id of each feature and id pair of each cross.

    Ids and pairs never met in the train days get no column (their weight would stay 0).
    """
    from scipy import sparse

    blocks: List[Dict[str, np.ndarray]] = []  # per block: {split: column index or -1}
    for name in features:
        blocks.append({s: np.asarray(a[name]).reshape(-1).astype(np.int64) for s, a in splits.items()})
    for a_name, b_name in crosses:
        keys = {s: (np.asarray(a[a_name]).reshape(-1).astype(np.int64) << 32)
                | np.asarray(a[b_name]).reshape(-1).astype(np.int64) for s, a in splits.items()}
        blocks.append(keys)
    matrices = {s: [] for s in splits}
    for block in blocks:
        seen = np.unique(block["train"])
        for s, keys in block.items():
            pos = np.searchsorted(seen, keys)
            pos = np.minimum(pos, len(seen) - 1)
            hit = seen[pos] == keys
            rows = np.flatnonzero(hit)
            matrices[s].append(sparse.csr_matrix((np.ones(len(rows)), (rows, pos[hit])),
                                                 shape=(len(keys), len(seen))))
    return {s: sparse.hstack(m, format="csr") for s, m in matrices.items()}


def fit_task(x: Dict[str, object], y: Dict[str, np.ndarray], cs: Sequence[float]) -> Dict:
    """The C with the best validation AUC, and the test AUC (with its DeLong 95% interval) at that C."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from components.model_evaluator import metrics as M

    curve = {}
    best = None
    for c in cs:
        model = LogisticRegression(C=c, max_iter=2000, tol=1e-6)
        model.fit(x["train"], y["train"])
        auc = float(roc_auc_score(y["validation"], model.predict_proba(x["validation"])[:, 1]))
        curve[str(c)] = round(auc, 5)
        if best is None or auc > best[1]:
            best = (c, auc, model)
    c, val_auc, model = best
    p = model.predict_proba(x["test"])[:, 1]
    auc, low, high = M.auc_interval(y["test"], p)
    return {"C": c, "validation_auc": round(val_auc, 5), "validation_auc_by_C": curve,
            "test_auc": round(float(auc), 5), "test_ci95": [round(float(low), 5), round(float(high), 5)],
            "test_rows": int(len(p)), "edge_of_grid": c in (min(cs), max(cs))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", default="/tmp/keep_samd_quality", help="bench.quality's --base (data/ and transform/)")
    p.add_argument("--Cs", type=float, nargs="+", default=list(DEFAULT_CS))
    p.add_argument("--output", default=RESULTS)
    a = p.parse_args(argv)

    from models.linear import LinearConfig
    from models.multitask import TASK_POPULATION, TASKS

    t0 = time.time()
    config = LinearConfig()
    splits, _ = load_splits(a.base, columns=sorted({*config.features, *(n for pair in config.crosses for n in pair),
                                                     *TASKS}))
    x_all = design(splits, config.features, config.crosses)
    tasks = {}
    for task in TASKS:
        gate = TASK_POPULATION[task]
        keep = {s: (np.ones(len(v[task]), bool) if gate is None else np.asarray(v[gate]).reshape(-1) > 0)
                for s, v in splits.items()}
        x = {s: x_all[s][keep[s]] for s in SPLITS}
        y = {s: np.asarray(splits[s][task]).reshape(-1)[keep[s]].astype(int) for s in SPLITS}
        tasks[task] = fit_task(x, y, a.Cs)
        print(f"{task}: C={tasks[task]['C']} validation {tasks[task]['validation_auc']:.4f} "
              f"test {tasks[task]['test_auc']:.4f} {tasks[task]['test_ci95']}", flush=True)
    result = {"tasks": tasks, "features": list(config.features), "crosses": [list(c) for c in config.crosses],
              "columns": int(x_all["train"].shape[1]), "rows": {s: int(x_all[s].shape[0]) for s in SPLITS},
              "command": "python -m bench.floor " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
              "seconds": round(time.time() - t0, 1),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"}
    record.write(a.output, result)
    print(f"wrote {a.output} in {result['seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
