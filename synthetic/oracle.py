"""Oracle AUC: the best AUC any model can reach on a synthetic data set.

Scores each row by its true probability (`p_click`, `p_conversion`, `p_cart`) instead
of a model's prediction. Conversion and cart are scored over clicked rows, as they
are defined (their true probabilities are conditional on a click).

    python -m synthetic.oracle data/default
"""

import glob
import json
import os
import sys
from typing import Dict

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from schemas import contract

ORACLE_OF = dict(zip(contract.LABELS, contract.ORACLE_COLUMNS))


def read_rows(data_root: str, columns=("scenario_id",) + contract.LABELS + contract.ORACLE_COLUMNS) -> pd.DataFrame:
    files = sorted(glob.glob(os.path.join(data_root, "day=*", "*.csv")))
    if not files:
        raise FileNotFoundError(f"{data_root}: no day=N/*.csv files")
    return pd.concat([pd.read_csv(f, usecols=list(columns)) for f in files], ignore_index=True)


def oracle_auc(rows: pd.DataFrame) -> Dict[str, Dict[str, float]]:
    """{scenario or "ALL": {task: AUC of the true probability}}; None where one class is missing."""
    out = {}
    groups = [("ALL", rows)] + list(rows.groupby("scenario_id"))
    for name, g in groups:
        per = {}
        for task, p in ORACLE_OF.items():
            sub = g if task == "click" else g[g["click"] == 1]
            y = sub[task].to_numpy()
            per[task] = float(roc_auc_score(y, sub[p].to_numpy())) if len(np.unique(y)) == 2 else None
        out[str(name)] = per
    return out


if __name__ == "__main__":
    json.dump(oracle_auc(read_rows(sys.argv[1])), sys.stdout, indent=1)
    print()
