"""Quality benchmark: every model of the pipeline on a preset's test day, over training seeds.

    .venv/bin/python -m bench.quality [--seeds 0 1 2] [--workdir /tmp/keep_samd_quality]
                                      [--preset rich] [--rows N] [--train-steps N] [--samd-steps N]

One seed per invocation spans sessions: run `--seeds 0`, later `--seeds 1` with the same
`--workdir`, then `--summarise-only --seeds 0 1` merges them (each seed's wall time is kept
in its folder). Without `--train-steps`, every trainer follows the pipeline's own rule:
epochs up to the epoch cap, early-stopped on validation (trainers/epochs.py).

1. Generates the preset (synthetic/generate.py; `rich` by default: 5 days, 1,000 users with
   hundreds of train-day impressions, >= 3,000 test rows per scenario; `default` is what
   `make run` trains on), data seed 7.
2. Runs the pipeline's ExampleGen (time split: days 0-2 train, 3 validation, 4 test) and
   Transform once (pipelines.transform_only).
3. Per training seed, runs the pipeline itself (pipelines.keep_samd.create_pipeline with
   that Transform imported, KEEP_SAMD_SEED = seed) on the LocalDagRunner: every trainer,
   ModelEvaluator (which scores the test split only), pusher and the report. Every
   unified model and baseline gets the same batch and train steps (equal budgets).
4. Reads each evaluator's evaluation.json and predictions.npz and writes one table to
   bench/results/quality.json: per model (oracle and the logistic-regression floor
   beside them), per scenario and role group, per task: AUC and GAUC, mean and std over
   seeds, the first seed's 95% interval (DeLong / bootstrap over users), the gap to the
   oracle; and each model against the floor on the same rows: the paired DeLong 95%
   interval of the AUC difference (ALL, click), per seed, and over the seeds (the mean
   difference, its interval covering both the seeds' spread and the shared test rows:
   metrics.paired_auc_difference_over_seeds). The same pairs against `--baselines`.

A difference whose interval contains 0 is "no difference".
"""

import argparse
import glob
import io
import json
import os
import platform
import time
from typing import Dict, List, Optional

import numpy as np

from bench import record
from bench.render import verdict
from components.model_evaluator import metrics as M
from models import registry

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "quality.json")
FLOOR = "logistic_regression"
# Evaluator component id -> the model's name in the table.
EVALUATORS = {f"{registry.get(n).title}Evaluator": n for n in registry.names()}
ROLES = ("super", "homogeneous", "heterogeneous", "minor")


def version_of(path: str) -> int:
    """The last all-digit folder of an artifact path (its execution id), 0 if none: newest sorts last."""
    parts = [p for p in path.rstrip("/").split("/") if p.isdigit()]
    return int(parts[-1]) if parts else 0


def _latest(pattern: str) -> str:
    found = sorted(glob.glob(pattern), key=version_of)
    if not found:
        raise FileNotFoundError(pattern)
    return found[-1]


def run_seed(data: str, head, out: str, seed: int, train_steps: Optional[int] = None, samd_steps: Optional[int] = None,
             only: Optional[List[str]] = None, overrides: Optional[Dict] = None) -> Dict[str, str]:
    """The pipeline on the imported Transform with one training seed; {model: evaluation folder}.

    `only` trains a subset (KEEP and the floor always; "samd", "keep_downstream" and
    unified names); `overrides` are PipelineOptions fields merged into the bench's
    (e.g. {"samd": {"samd": {...}}}), for ablations.
    """
    from tfx import v1 as tfx

    from pipelines.keep_samd import create_pipeline
    from pipelines.options import PipelineOptions

    overrides = dict(overrides or {})
    samd = {**({"train_steps": samd_steps} if samd_steps else {}), **overrides.pop("samd", {})}
    unified = dict(overrides.pop("unified", {}))
    downstream = dict(overrides.pop("downstream", {}))
    if only is not None:
        samd["enabled"] = "samd" in only
        downstream["enabled"] = "keep_downstream" in only
        unified["models"] = [m for m in only if registry.get(m).role == "unified" and m != FLOOR] + [FLOOR]
    options = PipelineOptions(
        output_dir=out, data_root=data, seed=seed, eval_steps=50, **({"train_steps": train_steps} if train_steps else {}),
        samd=samd, unified=unified, downstream=downstream,
        # Bless everything (a benchmark judges with the table below, not with the gate).
        blessing={"margin": -1.0, "tolerance": 1.0, "floor": None}, **overrides)
    tfx.orchestration.LocalDagRunner().run(create_pipeline(options, imported=head))
    return evaluations(out)


def finished_transform(workdir: str):
    """The TransformResult of a run_transform already finished in `workdir`, or None."""
    from pipelines.options import EXAMPLE_GEN_ID
    from pipelines.transform_only import TransformResult

    def latest(*parts):
        found = sorted(glob.glob(os.path.join(workdir, "root", *parts, "*")), key=lambda p: int(os.path.basename(p)))
        return found[-1] if found else None

    parts = [latest(EXAMPLE_GEN_ID, "examples"), latest("Transform", "transformed_examples"),
             latest("Transform", "transform_graph")]
    if not all(parts) or not glob.glob(os.path.join(parts[1], "Split-test", "*")):
        return None
    print(f"reusing the Transform in {workdir}", flush=True)
    return TransformResult(raw_examples=parts[0], transformed_examples=parts[1], transform_graph=parts[2],
                           transform_seconds=None)


def required_transform(workdir: str):
    """finished_transform(workdir), or FileNotFoundError naming the folder (bench.quality makes one)."""
    head = finished_transform(workdir)
    if head is None:
        raise FileNotFoundError(f"{workdir}: no finished Transform (python -m bench.quality --base <folder> makes "
                                "one in <folder>/transform)")
    return head


def evaluations(out: str) -> Dict[str, str]:
    """{model: its evaluator's latest output folder} of a pipeline run under `out`."""
    root = os.path.join(out, "pipelines", "keep_samd")
    return {name: os.path.dirname(_latest(os.path.join(root, component, "evaluation", "*", "evaluation.json")))
            for component, name in EVALUATORS.items()
            if glob.glob(os.path.join(root, component, "evaluation", "*", "evaluation.json"))}


def _load(folder: str):
    with open(os.path.join(folder, "evaluation.json")) as f:
        record = json.load(f)
    with open(os.path.join(folder, "predictions.npz"), "rb") as f:
        predictions = dict(np.load(io.BytesIO(f.read())))
    return record, predictions


def _stats(values: List[float]) -> Dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "seeds": 0}
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "seeds": len(values)}


def _paired(loaded, name, kind, base=FLOOR, task="click", rows_of=None):
    """Per seed: `name` minus `base` on `task`, same rows (ALL, or the rows `rows_of(predictions)` selects);
    AUC by DeLong, GAUC by a bootstrap over users."""
    per_seed, pairs = [], []
    for seed in loaded:
        if name not in seed or base not in seed:
            per_seed.append(None)
            continue
        mine, other = seed[name][1], seed[base][1]
        if f"{task}_covered" not in mine or f"{task}_covered" not in other:  # a model without that task
            per_seed.append(None)
            continue
        if not np.array_equal(mine[f"{task}_label"], other[f"{task}_label"]):
            raise ValueError(f"{name} and {base} were scored on different rows")
        rows = mine[f"{task}_covered"] & other[f"{task}_covered"]
        if task != "click":  # conversion and cart are judged over clicks, as the evaluator does
            rows = rows & (mine["click_label"] == 1)
        if rows_of is not None:
            rows = rows & rows_of(mine)
        y = mine[f"{task}_label"][rows]
        if kind == "auc":
            d = M.paired_auc_difference(y, mine[task][rows], other[task][rows])
        elif "user" in mine:
            d = M.paired_gauc_difference(mine["user"][rows], y, mine[task][rows], other[task][rows])
        else:  # predictions written before user ids were saved
            d = None
        per_seed.append({"diff": d[0], "low": d[1], "high": d[2], "rows": int(rows.sum())} if d else None)
        if kind == "auc" and d:
            pairs.append((rows, mine[f"{task}_label"], mine[task], other[task]))
    valid = [p for p in per_seed if p]
    # Every seed must agree: its interval's low is the lowest low, its high the highest high.
    side = verdict(min(p["low"] for p in valid), max(p["high"] for p in valid)) if valid else "n/a"
    verdict_text = {"n/a": "n/a", "no difference": "no difference (an interval contains 0)"}.get(side, f"{side} {base}")
    return {"per_seed": per_seed, "mean_diff": _stats([p["diff"] for p in valid]), "verdict": verdict_text,
            "over_seeds": _over_seeds(pairs, base)}


def _over_seeds(pairs, base) -> Optional[Dict]:
    """The seeds' mean difference on the rows every seed scored, its interval (seeds and rows) and verdict."""
    if len(pairs) < 2 or len({len(p[0]) for p in pairs}) > 1:  # seeds scored on different test sets
        return None
    rows = np.logical_and.reduce([p[0] for p in pairs])
    if any(not np.array_equal(p[1][rows], pairs[0][1][rows]) for p in pairs):
        return None
    d = M.paired_auc_difference_over_seeds(pairs[0][1][rows], [(a[rows], b[rows]) for _, _, a, b in pairs])
    if d is None:
        return None
    side = verdict(d[1], d[2])
    return {"diff": d[0], "low": d[1], "high": d[2], "rows": int(rows.sum()), "seeds": len(pairs),
            "verdict": side if side == "no difference" else f"{side} {base}"}


def paired_against(loaded, names, baselines, roles) -> Dict:
    """Each model minus each baseline, per task, on ALL rows and on each role group's rows (paired DeLong)."""
    out = {}
    for base in baselines:
        for name in names:
            if name == base:
                continue
            cells = {}
            for task in M.TASKS:
                cells[f"ALL {task}"] = _paired(loaded, name, "auc", base, task)
                for role in ROLES:
                    members = [s for s, r in roles.items() if r == role]
                    if members:
                        cells[f"{role} {task}"] = _paired(
                            loaded, name, "auc", base, task,
                            rows_of=lambda p, m=tuple(members): np.isin(p["scenario"].astype(str), m)
                            if "scenario" in p else np.ones(len(p[f"{task}_label"]), bool))
            out.setdefault(base, {})[name] = cells
    return out


def summarise(runs: List[Dict[str, str]], baselines=()) -> Dict:
    """The table: {model: {slice: {task: {auc, gauc, ci, gap}}}}, group means, paired differences to the floor."""
    loaded = [{name: _load(folder) for name, folder in run.items()} for run in runs]
    names = list(dict.fromkeys(n for seed in loaded for n in seed))
    roles = next(r for seed in loaded for r, _ in seed.values())["roles"]
    slices = [M.ALL] + sorted(roles, key=lambda s: (ROLES.index(roles[s]), s))
    table, oracle, groups = {}, {}, {}
    for name in names:
        table[name], groups[name] = {}, {}
        for s in slices:
            per = {}
            for task in M.TASKS:
                cells = [seed[name][0]["metrics"].get(s, {}).get(task) for seed in loaded if name in seed]
                cells = [c for c in cells if c]
                if not cells:
                    continue
                auc, gauc = _stats([c["auc"] for c in cells]), _stats([c["gauc"] for c in cells])
                per[task] = {"auc": auc, "gauc": gauc, "auc_ci_seed0": cells[0].get("auc_ci"),
                             "gauc_ci_seed0": cells[0].get("gauc_ci"), "rows": cells[0]["rows"],
                             "positives": cells[0]["positives"], "readable": cells[0].get("readable"),
                             "oracle_gap": (cells[0]["oracle_auc"] - auc["mean"])
                             if cells[0].get("oracle_auc") is not None and auc["mean"] is not None else None}
                if cells[0].get("oracle_auc") is not None:
                    oracle.setdefault(s, {})[task] = cells[0]["oracle_auc"]
            if per:
                table[name][s] = per
        for role in ROLES:  # per seed, the mean AUC of the role's scenarios; then mean ± std over seeds
            members = [s for s in slices if roles.get(s) == role]
            for task in M.TASKS:
                per_seed = []
                for seed in loaded:
                    if name not in seed:
                        continue
                    values = [seed[name][0]["metrics"].get(s, {}).get(task, {}).get("auc") for s in members]
                    values = [v for v in values if v is not None]
                    if values:
                        per_seed.append(float(np.mean(values)))
                if per_seed:
                    groups[name].setdefault(role, {})[task] = _stats(per_seed)
    paired = {kind: {name: _paired(loaded, name, kind) for name in names if name != FLOOR}
              for kind in ("auc", "gauc")} if FLOOR in names else {}
    budgets = {name: [seed[name][0].get("budget") for seed in loaded if name in seed] for name in names}
    against = paired_against(loaded, names, [b for b in baselines if b in names], roles)
    return {"slices": slices, "roles": roles, "oracle": oracle, "models": table, "group_mean_auc": groups,
            "paired_click_vs_floor_on_all": paired, "paired_vs_baselines": against, "budget": budgets}


def print_table(result: Dict) -> None:
    names = list(result["models"])
    for task in M.TASKS:
        print(f"\n== {task} AUC on the test day, mean ± std over {len(result['seeds'])} seed(s) ==")
        print(f"{'slice':>16} {'oracle':>7} " + " ".join(f"{n[:14]:>16}" for n in names))
        for s in result["slices"]:
            cells = []
            for n in names:
                c = result["models"][n].get(s, {}).get(task)
                cells.append(f"{c['auc']['mean']:.3f}±{c['auc']['std']:.3f}".rjust(16)
                             if c and c["auc"]["mean"] is not None else "n/a".rjust(16))
            o = result["oracle"].get(s, {}).get(task)
            print(f"{s:>16} {o if o is None else round(o, 3)!s:>7} " + " ".join(cells))
        for role in ROLES:
            cells = [result["group_mean_auc"][n].get(role, {}).get(task) for n in names]
            print(f"{'mean ' + role:>16} {'':>7} " + " ".join(
                f"{c['mean']:.3f}±{c['std']:.3f}".rjust(16) if c else "n/a".rjust(16) for c in cells))
        cells = [result["models"][n].get(M.ALL, {}).get(task, {}).get("gauc") for n in names]
        print(f"{'ALL GAUC':>16} {'':>7} " + " ".join(
            f"{c['mean']:.3f}±{c['std']:.3f}".rjust(16) if c and c["mean"] is not None else "n/a".rjust(16)
            for c in cells))
    for kind, method in (("auc", "DeLong"), ("gauc", "bootstrap over users")):
        print(f"\n== ALL click {kind.upper()} minus the logistic regression's, same rows, paired 95% ({method}) "
              f"per seed ==")
        for n, p in result["paired_click_vs_floor_on_all"].get(kind, {}).items():
            seeds = "  ".join(f"{q['diff']:+.4f} [{q['low']:+.4f}, {q['high']:+.4f}]" for q in p["per_seed"] if q)
            print(f"{n:>16}: {seeds}  -> {p['verdict']}{_over_seeds_text(p)}")
    for base, per in result.get("paired_vs_baselines", {}).items():
        print(f"\n== minus {base}, same rows, paired DeLong 95% per seed (ALL and the role groups' rows) ==")
        for n, cells in per.items():
            for key, p in cells.items():
                seeds = "  ".join(f"{q['diff']:+.4f} [{q['low']:+.4f}, {q['high']:+.4f}]" for q in p["per_seed"] if q)
                print(f"{n:>16} {key:>22}: {seeds}  -> {p['verdict']}{_over_seeds_text(p)}")


def _over_seeds_text(p) -> str:
    q = p.get("over_seeds")
    return f"; over seeds {q['diff']:+.4f} [{q['low']:+.4f}, {q['high']:+.4f}] -> {q['verdict']}" if q else ""


SECONDS_FILE = "seconds.json"


def _write_seconds(folder: str, seconds: Dict[str, float]) -> None:
    with open(os.path.join(folder, SECONDS_FILE), "w") as f:
        json.dump(seconds, f)


def _read_seconds(folder: str) -> Dict[str, float]:
    """A seed's recorded wall time ({} for runs from before it was kept)."""
    path = os.path.join(folder, SECONDS_FILE)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--workdir", default="/tmp/keep_samd_quality")
    p.add_argument("--base", default=None,
                   help="folder of the generated data/ and the Transform's transform/ (default: --workdir); a "
                        "finished Transform there is reused, so ablations in several workdirs share one")
    p.add_argument("--preset", default="rich", help="the synthetic data preset (synthetic/generate.py PRESETS)")
    p.add_argument("--rows", type=int, default=None, help="override the preset's rows (smoke runs)")
    p.add_argument("--train-steps", type=int, default=None, help="cap every trainer's steps (default: the pipeline's)")
    p.add_argument("--samd-steps", type=int, default=None, help="cap SAMD's steps (default: the pipeline's)")
    p.add_argument("--output", default=RESULTS)
    p.add_argument("--models", nargs="+", default=None,
                   help="train only these (KEEP and the floor always): samd, keep_downstream, unified names")
    p.add_argument("--options", default=None,
                   help='JSON of PipelineOptions fields merged in, e.g. \'{"samd": {"samd": {"strategy": "all2all"}}}\'')
    p.add_argument("--baselines", nargs="+", default=["shared_bottom", "mmoe"],
                   help="also pair every model against these (per task, on ALL and each role group's rows)")
    p.add_argument("--summarise-only", action="store_true",
                   help="rebuild the table from the evaluations already under --workdir")
    a = p.parse_args(argv)

    from pipelines.transform_only import run_transform
    from synthetic import generate as G

    from components.time_split_example_gen import TimeSplit

    t0 = time.time()
    base = a.base or a.workdir
    data = os.path.join(base, "data")
    config = G.preset_config(a.preset, rows=a.rows)
    runs, seconds = [], {}
    if a.summarise_only:
        runs = [evaluations(os.path.join(a.workdir, f"seed{seed}")) for seed in a.seeds]
        for seed in a.seeds:
            seconds.update(_read_seconds(os.path.join(a.workdir, f"seed{seed}")))
    else:
        if not os.path.exists(os.path.join(data, "truth.json")):
            G.generate(data, config, progress=False)
        head = finished_transform(os.path.join(base, "transform")) or run_transform(data, os.path.join(base, "transform"))
        seconds["generate_and_transform"] = time.time() - t0
        for seed in a.seeds:
            t1 = time.time()
            runs.append(run_seed(data, head, os.path.join(a.workdir, f"seed{seed}"), seed, a.train_steps,
                                 a.samd_steps, a.models, json.loads(a.options) if a.options else None))
            seconds[f"seed{seed}"] = time.time() - t1
            _write_seconds(os.path.join(a.workdir, f"seed{seed}"), {f"seed{seed}": seconds[f"seed{seed}"]})
            print(f"seed {seed}: {seconds[f'seed{seed}']:.0f}s", flush=True)
    result = summarise(runs, a.baselines)
    split = TimeSplit().split_days(range(config.days))
    result.update({
        "command": "python -m bench.quality " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        "seeds": a.seeds, "data": {"preset": a.preset, "rows": config.rows, "days": config.days, "users": config.users,
                                    "items": config.items, "data_seed": config.seed,
                                    "split_days": split},
        "train_steps": a.train_steps, "samd_steps": a.samd_steps, "seconds": seconds,
        "total_seconds": time.time() - t0,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"})
    record.write(a.output, result)
    print_table(result)
    print(f"\nwrote {a.output} in {result['total_seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
