"""Benchmark: SAMD's implicit similarity (Equation 3) on Beam for 10 million users, to bench/results/similarity.json.

Builds a (user, scenario) table with numpy (not the full generator: users belong to
one of 3 latent clusters and visit 1-5 of 8 scenarios, their cluster's more often;
10% of rows repeated, rows shuffled so each user's rows lie in several files), writes
it as quoted CSV files of ~1.5M rows, runs the Beam pass (`beam_pipeline.run`, CSV
source) on the DirectRunner, and checks the users per scenario set and the matrix
against numpy's grouped computation on the same table.

    TF_USE_LEGACY_KERAS=1 .venv/bin/python -m bench.similarity [--users 10000000] [--workers 2] [--output FILE]
"""

import argparse
import os
import platform
import shutil
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from bench import record
from components.scenario_similarity import beam_pipeline as B
from components.scenario_similarity import similarity as S

# (scenario, latent cluster, weight within / outside its cluster), like synthetic.generate's defaults.
SCENARIOS = (
    ("home_feed", 0, 6.0, 6.0), ("guess_you_like", 0, 2.0, 0.3), ("banner", 1, 2.0, 0.3),
    ("search_feed", 1, 2.0, 0.3), ("payment_page", 2, 2.0, 0.3), ("live_stream", 2, 2.0, 0.3),
    ("flash_sale", 1, 0.8, 0.1), ("coupon_center", 2, 0.8, 0.1),
)


def make_table(users: int, seed: int = 7, chunk: int = 1_000_000):
    """(user index int32 [rows], scenario code int8 [rows]), shuffled, with repeated rows."""
    rng = np.random.default_rng(seed)
    N = len(SCENARIOS)
    logw = np.log(np.array([[w_in if c == k else w_out for _, c, w_in, w_out in SCENARIOS] for k in range(3)]))
    us, ss = [], []
    for start in range(0, users, chunk):
        n = min(chunk, users - start)
        home = rng.integers(0, 3, n)
        k = rng.choice(np.arange(1, 6), n, p=[0.25, 0.3, 0.2, 0.15, 0.1])
        # Gumbel top-k: k distinct scenarios per user, drawn by weight without replacement.
        keys = logw[home] + rng.gumbel(size=(n, N))
        order = np.argsort(-keys, axis=1)
        take = np.arange(N)[None, :] < k[:, None]
        us.append(np.broadcast_to(np.arange(start, start + n, dtype=np.int32)[:, None], (n, N))[take])
        ss.append(order[take].astype(np.int8))
    user, scen = np.concatenate(us), np.concatenate(ss)
    dup = rng.choice(len(user), len(user) // 10, replace=False)  # repeated impressions change nothing
    user, scen = np.concatenate([user, user[dup]]), np.concatenate([scen, scen[dup]])
    perm = rng.permutation(len(user))
    return user[perm], scen[perm]


def write_csvs(folder: str, user: np.ndarray, scen: np.ndarray, rows_per_file: int):
    names = pa.array([s for s, _, _, _ in SCENARIOS])
    files = []
    for f, start in enumerate(range(0, len(user), rows_per_file)):
        sl = slice(start, start + rows_per_file)
        ids = pc.binary_join_element_wise("u", pc.cast(pa.array(user[sl]), pa.string()), "")
        table = pa.table({"user_id": ids, "scenario_id": names.take(pa.array(scen[sl])),
                          "day": pa.array(np.full(len(ids), f % 4, np.int32))})
        day = os.path.join(folder, f"day={f % 4}")
        os.makedirs(day, exist_ok=True)
        path = os.path.join(day, f"part-{f:05d}.csv")
        pacsv.write_csv(table, path)  # strings double-quoted, as the generator writes them
        files.append(path)
    return files


def numpy_set_counts(user: np.ndarray, scen: np.ndarray, users: int):
    names = [s for s, _, _, _ in SCENARIOS]
    masks = np.zeros(users, np.uint16)
    for c in range(len(names)):
        masks[user[scen == c]] |= np.uint16(1 << c)
    uniq, n = np.unique(masks, return_counts=True)
    return {tuple(s for c, s in enumerate(names) if (m >> c) & 1): int(k) for m, k in zip(uniq, n)}


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--users", type=int, default=10_000_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rows-per-file", type=int, default=1_500_000)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results", "similarity.json"))
    a = p.parse_args(argv)
    names = [s for s, _, _, _ in SCENARIOS]
    tmp = tempfile.mkdtemp(prefix="bench_similarity_")
    try:
        t0 = time.perf_counter()
        user, scen = make_table(a.users)
        files = write_csvs(os.path.join(tmp, "data"), user, scen, a.rows_per_file)
        prepare = time.perf_counter() - t0
        expected_counts = numpy_set_counts(user, scen, a.users)
        expected = S.grouped_similarity(expected_counts, names, a.alpha)
        rows = len(user)
        del user, scen

        beam_args = ["--runner=DirectRunner", "--direct_running_mode=multi_processing",
                     f"--direct_num_workers={a.workers}"]
        load_before = os.getloadavg()[0]  # the cores may be shared: say how busy they were
        t0 = time.perf_counter()
        doc = B.run("csv", files, names, os.path.join(tmp, "out"), a.alpha, 2, beam_args)
        wall = time.perf_counter() - t0
        load_after = os.getloadavg()[0]

        got_counts = {tuple(e["scenarios"]): e["users"] for e in doc["users_per_set"]}
        rel = float(np.max(np.abs(np.array(doc["matrix"]) - expected) / np.maximum(np.abs(expected), 1e-300)))
        ok = got_counts == expected_counts and rel < 1e-9
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "runner": " ".join(beam_args),
        "users": a.users, "rows": rows, "files": len(files), "scenario_sets": doc["scenario_sets"],
        "seconds": round(wall, 2), "users_per_second": round(a.users / wall), "rows_per_second": round(rows / wall),
        "load_average_1m": [round(load_before, 2), round(load_after, 2)], "prepare_seconds": round(prepare, 1), "equals_numpy": ok, "max_relative_difference": rel,
        "top_g": doc["top_g"],
    }
    record.write(a.output, result)
    print(f"similarity: {a.users:,} users ({rows:,} rows, {len(files)} CSV files) in {wall:.1f}s = "
          f"{a.users / wall:,.0f} users/s on {a.workers} DirectRunner workers (load {load_before:.1f}); "
          f"equals numpy: {ok}")
    if not ok:
        raise SystemExit(f"Beam result differs from numpy (sets equal: {got_counts == expected_counts}, "
                         f"max relative difference {rel:.3g})")


if __name__ == "__main__":
    main()
