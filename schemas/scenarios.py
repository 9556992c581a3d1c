"""The scenario table (`scenarios.csv`): its one parser.

RawDataCheck validates the data folder's table with it and emits the validated copy
as a `ScenarioTable` artifact; every component that needs the scenarios, their roles
or their order (the evaluator, the similarity, SAMD, the downstream trainer, the
super-scenario teacher) reads that artifact with `read_scenario_table`, never the data
folder. Reads go through tf.io.gfile, so the artifact may live on any filesystem.
"""

import csv
import io
import os
from typing import Dict, List

from schemas import contract

SCENARIOS_FILE = "scenarios.csv"


class RawDataError(ValueError):
    """Raw data that breaks the contract; the message names the file and the problem."""


def read_scenarios(path: str) -> Dict[str, Dict[str, str]]:
    """Reads and checks a scenarios.csv; returns {scenario_id: row} in the file's order."""
    import tensorflow as tf

    if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
        raise RawDataError(f"{path}: scenarios file not found (each data folder needs a {SCENARIOS_FILE})")
    with tf.io.gfile.GFile(path, "rb") as f:
        text = f.read().decode("utf-8", errors="replace")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows:
        raise RawDataError(f"{path}: file is empty")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in contract.SCENARIO_COLUMNS if c not in header]
    if missing:
        raise RawDataError(f"{path}: header lacks column(s) {', '.join(missing)}")
    out: Dict[str, Dict[str, str]] = {}
    for n, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise RawDataError(f"{path}, line {n}: expected {len(header)} columns, found {len(row)}")
        rec = dict(zip(header, (v.strip() for v in row)))
        sid = rec["scenario_id"]
        if not sid:
            raise RawDataError(f"{path}, line {n}: empty scenario_id")
        if sid in out:
            raise RawDataError(f"{path}, line {n}: scenario '{sid}' listed twice")
        if rec["role"] not in contract.SCENARIO_ROLES:
            raise RawDataError(
                f"{path}, line {n}: role '{rec['role']}' of scenario '{sid}' is not one of {', '.join(contract.SCENARIO_ROLES)}"
            )
        out[sid] = rec
    if not out:
        raise RawDataError(f"{path}: no scenarios listed")
    supers = [s for s, r in out.items() if r["role"] == "super"]
    if len(supers) != 1:
        raise RawDataError(f"{path}: exactly one scenario must have role 'super', found {len(supers)}")
    return out


def read_scenario_table(uri: str) -> Dict[str, Dict[str, str]]:
    """The scenarios of a ScenarioTable artifact (its folder `uri`)."""
    return read_scenarios(os.path.join(uri, SCENARIOS_FILE))


def roles(table: Dict[str, Dict[str, str]]) -> Dict[str, str]:
    return {sid: row["role"] for sid, row in table.items()}


def with_roles(table: Dict[str, Dict[str, str]], wanted) -> List[str]:
    """The scenario ids whose role is in `wanted`, in the table's order."""
    return [sid for sid, row in table.items() if row["role"] in set(wanted)]
