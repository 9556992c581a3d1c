"""Checks of a raw data folder against the contract in `schemas/`, before ExampleGen reads it.

ExampleGen and TFDV would also trip over most of these, but with a Beam stack trace
and no file name; this check names the file, the line and the problem, and stops
the run before anything downstream is written.

Reads every CSV with Arrow's streaming reader (C++, column-wise), so the cost is a
fraction of ExampleGen's own pass over the data.
"""

from __future__ import annotations

import collections
import os
import re
from typing import Dict, List, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from tfx.dsl.io import fileio

from models import artifact_io
from schemas import contract
from schemas.scenarios import SCENARIOS_FILE, RawDataError, read_scenarios  # noqa: F401 - re-exported

DAY_DIR = re.compile(r"^day=(\d+)$")
_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_INTEGER = r"^[+-]?\d+$"


def find_span_files(data_root: str) -> Dict[int, List[str]]:
    """{day: [csv files]} under data_root/day=N/."""
    if not fileio.exists(data_root):
        raise RawDataError(f"{data_root}: data folder does not exist")
    if not fileio.isdir(data_root):
        raise RawDataError(f"{data_root}: not a folder")
    spans: Dict[int, List[str]] = {}
    for entry in sorted(e.rstrip("/") for e in fileio.listdir(data_root)):
        m = DAY_DIR.match(entry)
        if m and fileio.isdir(os.path.join(data_root, entry)):
            files = sorted(fileio.glob(os.path.join(data_root, entry, "*.csv")))
            if not files:
                raise RawDataError(f"{os.path.join(data_root, entry)}: span folder holds no .csv file")
            spans[int(m.group(1))] = files
    if not spans:
        raise RawDataError(f"{data_root}: no span folders (day=N/*.csv) found")
    return spans


def _first(mask: np.ndarray) -> Optional[int]:
    idx = np.flatnonzero(mask)
    return int(idx[0]) if len(idx) else None


def check_file(path: str, scenario_ids, expected_header: Optional[List[str]], day: Optional[int]) -> Dict:
    """Checks one CSV file; returns its header and per-scenario row counts."""
    if fileio.stat(path).length == 0:
        raise RawDataError(f"{path}: file is empty")
    with fileio.open(path, "rb") as f:
        first_line = f.readline().decode("utf-8", errors="replace").strip()
    header = [h.strip().strip('"') for h in first_line.split(",")]
    missing = [c for c in contract.RAW_COLUMNS if c not in contract.ORACLE_COLUMNS and c not in header]
    if missing:
        raise RawDataError(f"{path}: header lacks column(s) {', '.join(missing)}")
    if expected_header is not None and header != expected_header:
        raise RawDataError(f"{path}: header differs from the other files' ({','.join(expected_header)})")

    bad_rows = []

    def on_invalid(row):
        bad_rows.append(row)
        return "error"

    rows = 0
    counts: collections.Counter = collections.Counter()
    source = artifact_io.open_stream(path)  # Arrow's own path reader is local only
    try:
        reader = pacsv.open_csv(
            source,
            read_options=pacsv.ReadOptions(use_threads=False, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in header}, strings_can_be_null=True, quoted_strings_can_be_null=True
            ),
        )
        for batch in reader:
            _check_batch(path, batch, rows, scenario_ids, day)
            sids, n = np.unique(batch.column("scenario_id").to_numpy(zero_copy_only=False), return_counts=True)
            counts.update(dict(zip(sids.tolist(), n.tolist())))
            rows += batch.num_rows
    except pa.ArrowInvalid as e:
        if bad_rows:
            r = bad_rows[0]
            where = f"line {r.number}" if r.number is not None else "a row"
            raise RawDataError(
                f"{path}, {where}: expected {r.expected_columns} columns, found {r.actual_columns}: {r.text[:200]!r}"
            ) from None
        raise RawDataError(f"{path}: not a readable CSV file: {e}") from None
    finally:
        source.close()
    if rows == 0:
        raise RawDataError(f"{path}: file is empty (a header and no rows)")
    return {"header": header, "rows": rows, "rows_per_scenario": dict(counts)}


def _check_batch(path: str, batch: pa.RecordBatch, offset: int, scenario_ids, day: Optional[int]) -> None:
    def line(i: int) -> int:  # 1-based file line; line 1 is the header
        return offset + i + 2

    for col in contract.REQUIRED_COLUMNS:
        i = _first(batch.column(col).is_null().to_numpy(zero_copy_only=False))
        if i is not None:
            raise RawDataError(f"{path}, line {line(i)}: required column '{col}' is empty")
    for col in contract.NUMERIC_COLUMNS:
        if col not in batch.schema.names:
            continue
        values = batch.column(col)
        pattern = _INTEGER if col in contract.LABELS or col in ("day",) + contract.INTEGER_CATEGORICAL_FEATURES else _NUMBER
        ok = pc.fill_null(pc.match_substring_regex(pc.utf8_trim_whitespace(values), pattern), True)
        i = _first(~ok.to_numpy(zero_copy_only=False))
        if i is not None:
            kind = "an integer" if pattern == _INTEGER else "a number"
            raise RawDataError(f"{path}, line {line(i)}: column '{col}' is {values[i].as_py()!r}, not {kind}")
    labels = {}
    for col in contract.LABELS:
        v = pc.cast(pc.utf8_trim_whitespace(batch.column(col)), pa.int64()).to_numpy(zero_copy_only=False)
        i = _first((v != 0) & (v != 1))
        if i is not None:
            raise RawDataError(f"{path}, line {line(i)}: label '{col}' is {v[i]}, not 0 or 1")
        labels[col] = v
    for col in ("conversion", "cart"):
        i = _first((labels[col] == 1) & (labels["click"] == 0))
        if i is not None:
            raise RawDataError(f"{path}, line {line(i)}: '{col}' is 1 without a click")
    known = pc.is_in(batch.column("scenario_id"), value_set=pa.array(sorted(scenario_ids), pa.string()))
    i = _first(~known.to_numpy(zero_copy_only=False))
    if i is not None:
        raise RawDataError(
            f"{path}, line {line(i)}: unknown scenario '{batch.column('scenario_id')[i].as_py()}' "
            f"(not in {SCENARIOS_FILE})"
        )
    if day is not None:
        d = pc.cast(pc.utf8_trim_whitespace(batch.column("day")), pa.int64()).to_numpy(zero_copy_only=False)
        i = _first(d != day)
        if i is not None:
            raise RawDataError(f"{path}, line {line(i)}: day is {d[i]} inside folder day={day}")


def check_data_root(data_root: str, spans: Optional[List[int]] = None) -> Dict:
    """Checks a whole data folder; returns a report (files, rows per span and scenario)."""
    span_files = find_span_files(data_root)
    scenarios = read_scenarios(os.path.join(data_root, SCENARIOS_FILE))
    if spans is not None:
        absent = [s for s in spans if s not in span_files]
        if absent:
            raise RawDataError(f"{data_root}: span(s) {absent} not found (have {sorted(span_files)})")
        span_files = {s: span_files[s] for s in spans}
    header = None
    report = {"data_root": data_root, "scenarios": scenarios, "spans": {}, "rows": 0}
    for day, files in sorted(span_files.items()):
        per = {}
        for path in files:
            info = check_file(path, scenarios.keys(), header, day)
            header = info["header"]
            per[os.path.relpath(path, data_root)] = info["rows_per_scenario"]
            report["rows"] += info["rows"]
        report["spans"][day] = per
    return report
