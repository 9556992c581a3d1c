"""Benchmark: SAMD students against the same students trained alone, KEEP, and the ablations.

Uses the artifacts of a finished pipeline run (transform graph, transformed and raw
examples, the KEEP teacher, the scenario similarity, the KEEP evaluators' test
predictions), e.g. one seed of bench/quality.py on the rich preset:

    .venv/bin/python -m bench.samd --run /tmp/keep_samd_quality/seed0 \
        --data /tmp/keep_samd_quality/data --transform /tmp/keep_samd_quality/transform \
        --seeds 0 1 2 --variants samd alone \
        [--workdir /tmp/samd_bench] [--steps N] [--epochs N] [--summarise-only] [--separate]
        [--scenarios banner ...]

Each (variant, seed) is one trainers.samd.run (the SamdTrainer's own code: train
split, early stopping on validation; --steps, --epochs and --eval-steps default to the
pipeline's) whose exported students are scored on the test day's raw examples;
predictions are kept under --workdir, so runs can be added later and the table rebuilt.
Variants are SamdConfig overrides (VARIANTS); "alone" is the same students with no
teacher (distill_weight 0, no embedding transfer): the paper's trained-alone baseline
with the same steps, batches and early stopping. "samd_paper" is the default without the
embedding transfer (SamdConfig.teacher_embeddings, beyond the paper) and
"alone_teacher_embeddings" the embedding transfer without distillation; runs saved
before the embedding transfer existed are "samd_paper" and the ablations.

Reported (bench/results/samd.json): click AUC per scenario and role group (mean ± std
over seeds); per seed, the paired DeLong 95% interval of each variant minus "alone"
(and minus "alone_teacher_embeddings" when it was run) and minus KEEP (keep_general,
and keep_downstream on the sub-scenarios) on the same rows, per scenario and for each
group mean (the groups' scenarios are disjoint rows, so the mean difference's variance
is the sum of the scenarios' over n^2); over the seeds, the same differences from the
other variants for each group mean (the seeds' spread by Student's t plus the shared
rows by DeLong, metrics.paired_auc_difference_over_seeds); W_T's mean row entropy per
scenario against 0.3 log M_i; the Spearman rank correlation, over pairs of
scenarios with students of equal depth, between |T_i - T_j| and |W_T^i - W_T^j|; the
top-G neighbours. A difference whose interval contains 0 is "no difference".
"""

import argparse
import glob
import io
import itertools
import json
import os
import platform
import time

import numpy as np
import tensorflow as tf

from bench import record
from bench.quality import required_transform, version_of
from bench.render import verdict
from components.model_evaluator import metrics as M
from models import registry
from pipelines.options import PipelineOptions
from trainers import samd as samd_trainer

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "samd.json")
GROUPS = ("super", "homogeneous", "heterogeneous", "minor")
# The paper's SAMD: no embedding transfer (every ablation below is on it).
PAPER = {"teacher_embeddings": False}
# The paper's meta objective (W_T fitted to L_fd), without the no-transfer column.
DISTILL = {**PAPER, "meta_objective": "distill", "null_transfer": False}
ALONE = {**DISTILL, "distill_weight": 0.0, "transfer_entropy": 0.0}
VARIANTS = {
    "samd": {},  # the defaults: look-ahead meta objective, no-transfer column, embedding transfer
    "alone": ALONE,  # the same students with no teacher at all
    "samd_paper": PAPER,  # the defaults without the embedding transfer (beyond the paper)
    "alone_teacher_embeddings": {**ALONE, "teacher_embeddings": True},  # the embedding transfer only
    "distill": DISTILL,  # Algorithm 1 read literally
    "lookahead": {**PAPER, "meta_objective": "lookahead", "null_transfer": False},
    # Control: the no-transfer column's mass (~1/(M_i+1) of each row) as a plain lower weight.
    "all2all_weight_0.78": {**PAPER, "strategy": "all2all", "distill_weight": 0.78},
    # Ablations (Table 3 and each of our choices), on the paper's objective:
    "entropy_0": {**DISTILL, "transfer_entropy": 0.0},
    "meta_lr_1e-3": {**DISTILL, "meta_learning_rate": 1e-3},
    "no_cluster": {**DISTILL, "strategy": "no_cluster"},
    "all2all": {**DISTILL, "strategy": "all2all"},
    "similarity": {**DISTILL, "strategy": "similarity"},
    "explicit_only": {**DISTILL, "implicit": False},
    "implicit_only": {**DISTILL, "explicit": False},
    "raw_similarity": {**DISTILL, "similarity": "raw"},
    "shared_projection": {**DISTILL, "projection": "shared"},
    "all_teacher_layers": {**DISTILL, "teacher_layers": "all"},
    "uniform_sampling": {**DISTILL, "sampling": "uniform"},
    "response": {**DISTILL, "response_weight": 1.0},  # beyond the paper
}
KEEP_EVALUATORS = {e.name: f"{e.title}Evaluator" for e in map(registry.with_role, ("general", "downstream"))}


TEACHERS = {"general": "KeepTrainer", "super": "SamdTeacherTrainer"}


def artifacts(run, transform=None, teacher="general"):
    """The run's artifacts; `transform`: a pipelines.transform_only folder the run imported (bench/quality.py).

    `teacher`: "general" (the run's KeepTrainer, the pipeline's default) or "super" (its SamdTeacherTrainer,
    which a run has with KEEP_SAMD_SAMD='{"teacher": "super"}').
    """
    root = os.path.join(run, "pipelines", "keep_samd")

    def one(pattern):
        found = sorted(glob.glob(os.path.join(root, pattern)), key=version_of)
        if not found:
            raise FileNotFoundError(f"{os.path.join(root, pattern)}: not in the run (an imported Transform? "
                                    "pass --transform)")
        return found[-1]

    if transform:
        head = required_transform(transform)
        examples, graph, raw = head.transformed_examples, head.transform_graph, head.raw_examples
    else:
        examples, graph = one("Transform/transformed_examples/*"), one("Transform/transform_graph/*")
        raw = one("CsvExampleGen/examples/*")
    sim = glob.glob(os.path.join(root, "ScenarioSimilarity/similarity/*/similarity.json"))
    return {
        "transform_graph": graph,
        "train": os.path.join(examples, "Split-train", "*"),
        "validation": os.path.join(examples, "Split-validation", "*"),  # early stopping
        "raw_test": os.path.join(raw, "Split-test", "*"),  # scoring: the test day
        "teacher": one(f"{TEACHERS[teacher]}/model/*/Format-Keras"),
        "similarity": json.load(open(sorted(sim, key=version_of)[-1])) if sim else None,
        "root": root,
    }


def test_rows(pattern):
    """Serialized raw test examples with their scenario and click label, in file order."""
    rows = [r.numpy() for r in tf.data.TFRecordDataset(sorted(glob.glob(pattern)), compression_type="GZIP")]
    parsed = [tf.train.Example.FromString(r).features.feature for r in rows]
    scenario = np.array([f["scenario_id"].bytes_list.value[0].decode() for f in parsed])
    click = np.array([f["click"].int64_list.value[0] for f in parsed])
    return rows, scenario, click


def score_students(model_dir, rows, scenario):
    """Each exported student's click probability on its own scenario's rows: [rows], NaN elsewhere."""
    pred = np.full(len(rows), np.nan)
    for sid in sorted(os.listdir(model_dir)):
        idx = np.flatnonzero(scenario == sid)
        serve = tf.saved_model.load(os.path.join(model_dir, sid)).signatures["serving_default"]
        pred[idx] = np.concatenate([serve(examples=tf.constant([rows[i] for i in idx[s:s + 2048]]))["click"].numpy()
                                    .reshape(-1) for s in range(0, len(idx), 2048)])
    return pred


def keep_predictions(root, scenario, click):
    """{keep model: click predictions on the test rows} from the run's evaluators, NaN where not covered."""
    out = {}
    for name, component in KEEP_EVALUATORS.items():
        found = sorted(glob.glob(os.path.join(root, component, "evaluation", "*", "predictions.npz")), key=version_of)
        if not found:
            continue
        with open(found[-1], "rb") as f:
            p = dict(np.load(io.BytesIO(f.read())))
        same = np.array_equal(p["click_label"], click) and (
            "scenario" not in p or np.array_equal(p["scenario"].astype(str), scenario))  # older files lack it
        if not same:
            raise ValueError(f"{found[-1]} was scored on other rows than {root}'s test split")
        out[name] = np.where(p["click_covered"], p["click"], np.nan)
    return out


def train_variant(art, scenarios_csv, variant, seed, steps, epochs, eval_steps, out, **extra):
    custom = {"model_name": "samd", "seed": seed, "epochs": epochs, "patience": PipelineOptions().patience,
              "samd": VARIANTS[variant], **extra}
    t0 = time.perf_counter()
    report = samd_trainer.run(art["train"], art["validation"], art["transform_graph"], art["teacher"], scenarios_csv,
                              os.path.join(out, "model"), out, steps, eval_steps, art["similarity"], custom)
    return report, time.perf_counter() - t0


def _paired(click, scenario, roles, a, b):
    """Per scenario and per group mean: (diff, low, high) of AUC(a) - AUC(b), paired DeLong, same rows."""
    per, var = {}, {}
    for sid in sorted(set(scenario)):
        rows = (scenario == sid) & ~np.isnan(a) & ~np.isnan(b)
        d = M.paired_auc_difference(click[rows], a[rows], b[rows]) if rows.any() else None
        if d:
            per[sid] = [float(x) for x in d]
            var[sid] = ((d[2] - d[1]) / (2 * 1.96)) ** 2
    groups = {}
    for g in GROUPS:
        ids = [s for s in per if roles.get(s) == g]
        if ids:
            mean = float(np.mean([per[s][0] for s in ids]))
            half = 1.96 * float(np.sqrt(sum(var[s] for s in ids))) / len(ids)
            groups[g] = [mean, mean - half, mean + half]
    return per, groups


def _over_seeds(click, scenario, roles, pairs):
    """Per group mean: (diff, low, high) of a - b over the seeds (metrics.paired_auc_difference_over_seeds:
    the seeds' spread by t, the shared test rows by DeLong; the group's scenarios are disjoint rows)."""
    parts = {}
    for sid in sorted(set(scenario)):
        rows = (scenario == sid) & np.logical_and.reduce([~np.isnan(a) & ~np.isnan(b) for a, b in pairs])
        got = M.over_seeds_parts(click[rows], [(a[rows], b[rows]) for a, b in pairs]) if rows.any() else None
        if got:
            parts[sid] = got
    groups = {}
    for g in GROUPS:
        ids = [s for s in parts if roles.get(s) == g]
        if ids:
            diffs = np.mean([parts[s][0] for s in ids], axis=0)
            groups[g] = [float(x) for x in M.over_seeds_interval(diffs, sum(parts[s][1] for s in ids) / len(ids) ** 2)]
    return {"seeds": len(pairs), "groups": groups}


def _spearman(x, y):
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1]) if len(x) > 2 and np.std(rx) > 0 and np.std(ry) > 0 else None


def transfer_stats(report):
    """Mean row entropy of W_T per scenario (and its share of log M_i), Spearman(|ΔT|, |ΔW_T|)."""
    sc = report["scenarios"]
    if any(r["transfer_weights"] is None for r in sc.values()):
        return None
    entropy = {s: {"entropy": r["transfer_entropy"], "share_of_max": r["transfer_entropy"] / r["max_entropy"]}
               for s, r in sc.items()}
    dt, dw = [], []
    for a, b in itertools.combinations(sc, 2):
        wa, wb = np.asarray(sc[a]["transfer_weights"]), np.asarray(sc[b]["transfer_weights"])
        if wa.shape == wb.shape:
            dt.append(float(np.linalg.norm(np.subtract(sc[a]["scenario_representation"],
                                                       sc[b]["scenario_representation"]))))
            dw.append(float(np.abs(wa - wb).sum()))
    return {"entropy": entropy, "min_share_of_max": min(e["share_of_max"] for e in entropy.values()),
            "spearman_t_vs_wt": _spearman(dt, dw), "pairs": len(dt)}


def summarise(workdir, variants, seeds, click, scenario, roles, keep):
    table, paired, over_seeds, transfer, budgets = {}, {}, {}, {}, {}
    loaded = {}
    for v in variants:
        for seed in seeds:
            path = os.path.join(workdir, f"{v}_s{seed}")
            if os.path.exists(os.path.join(path, "predictions.npy")):
                loaded[(v, seed)] = (np.load(os.path.join(path, "predictions.npy")),
                                     json.load(open(os.path.join(path, "transfer.json"))))
    for v in variants:
        runs = [(seed, *loaded[(v, seed)]) for seed in seeds if (v, seed) in loaded]
        if not runs:
            continue
        per_seed = []
        for _, pred, _ in runs:
            aucs = {}
            for sid in sorted(set(scenario)):
                rows = scenario == sid
                auc = M.auc_interval(click[rows], pred[rows])
                aucs[sid] = auc[0] if auc else None
            for g in GROUPS:
                vals = [aucs[s] for s in aucs if roles.get(s) == g and aucs[s] is not None]
                aucs[f"mean {g}"] = float(np.mean(vals)) if vals else None
            per_seed.append(aucs)
        table[v] = {k: {"mean": float(np.mean([a[k] for a in per_seed])),
                        "std": float(np.std([a[k] for a in per_seed], ddof=1)) if len(per_seed) > 1 else 0.0,
                        "seeds": len(per_seed)} for k in per_seed[0] if per_seed[0][k] is not None}
        paired[v], over_seeds[v] = {}, {}
        # alone_teacher_embeddings, when run, is the control for what distillation adds to the embedding transfer.
        for base in ["alone"] + [b for b in ("alone_teacher_embeddings",) if b in variants] + list(keep):
            if base == v:
                continue
            rows_per_seed = []
            for seed, pred, _ in runs:
                other = keep[base] if base in keep else loaded.get((base, seed), (None,))[0]
                if other is None:
                    continue
                per, groups = _paired(click, scenario, roles, pred, other)
                rows_per_seed.append({"seed": seed, "scenarios": per, "groups": groups})
            if rows_per_seed:
                paired[v][base] = rows_per_seed
            if base not in keep:
                pairs = [(pred, loaded[(base, seed)][0]) for seed, pred, _ in runs if (base, seed) in loaded]
                if len(pairs) > 1:
                    over_seeds[v][base] = _over_seeds(click, scenario, roles, pairs)
        transfer[v] = [dict(transfer_stats(r) or {}, seed=seed, neighbours=r.get("neighbours"),
                            best_epochs=r.get("best_epochs"), batch_sizes=r.get("batch_sizes"))
                       for seed, _, r in runs]
        budgets[v] = [r.get("train_seconds") for _, _, r in runs]
    for name, pred in keep.items():
        aucs = {}
        for sid in sorted(set(scenario)):
            rows = (scenario == sid) & ~np.isnan(pred)
            auc = M.auc_interval(click[rows], pred[rows]) if rows.any() else None
            if auc:
                aucs[sid] = {"mean": auc[0], "std": 0.0, "seeds": 1}
        for g in GROUPS:
            vals = [aucs[s]["mean"] for s in aucs if roles.get(s) == g]
            if vals:
                aucs[f"mean {g}"] = {"mean": float(np.mean(vals)), "std": 0.0, "seeds": 1}
        table[name] = aucs
    return {"auc": table, "paired": paired, "over_seeds": over_seeds, "transfer": transfer, "train_seconds": budgets}


def print_table(result, scenario_order):
    keys = scenario_order + [f"mean {g}" for g in GROUPS]
    names = list(result["auc"])
    print(f"\n== click AUC on the test day (mean ± std over seeds) ==\n{'':>20}" + "".join(f"{n[:13]:>15}" for n in names))
    for k in keys:
        cells = [result["auc"][n].get(k) for n in names]
        print(f"{k:>20}" + "".join((f"{c['mean']:.3f}±{c['std']:.3f}" if c else "n/a").rjust(15) for c in cells))
    for v, bases in result["paired"].items():
        for base, seeds in bases.items():
            cells = "  ".join(f"{g}: " + ", ".join(f"{s['groups'][g][0]:+.4f} [{s['groups'][g][1]:+.4f}, "
                                                  f"{s['groups'][g][2]:+.4f}] {verdict(*s['groups'][g][1:])}"
                                                  for s in seeds if g in s["groups"])
                              for g in GROUPS if any(g in s["groups"] for s in seeds))
            print(f"{v} - {base}: {cells}")
    for v, bases in result.get("over_seeds", {}).items():
        for base, r in bases.items():
            print(f"{v} - {base}, over {r['seeds']} seeds: " + "  ".join(
                f"{g}: {d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}] {verdict(*d[1:])}" for g, d in r["groups"].items()))
    for v, runs in result["transfer"].items():
        for r in runs:
            if "min_share_of_max" in r:
                print(f"{v} seed {r['seed']}: W_T entropy min share of log M_i {r['min_share_of_max']:.2f}, "
                      f"Spearman(|dT|, |dW_T|) {r['spearman_t_vs_wt']} over {r['pairs']} pairs")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="a finished pipeline run (its output folder)")
    p.add_argument("--data", required=True, help="the run's data root (scenarios.csv)")
    p.add_argument("--transform", default=None,
                   help="the Transform folder the run imported (bench/quality.py: <workdir>/transform)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--teacher", default="general", choices=sorted(TEACHERS),
                   help="general: the run's KEEP model (default, as the pipeline); super: its SamdTeacherTrainer")
    p.add_argument("--variants", nargs="+", default=["samd", "alone"], choices=sorted(VARIANTS))
    p.add_argument("--workdir", default="/tmp/samd_bench")
    pipeline = PipelineOptions()  # the SamdTrainer's own budget, so "samd" is the pipeline's students
    p.add_argument("--steps", type=int, default=pipeline.train_steps)
    p.add_argument("--epochs", type=int, default=pipeline.epochs, help="the cap; early stopping by the epoch rule")
    p.add_argument("--eval-steps", type=int, default=pipeline.eval_steps)
    p.add_argument("--output", default=RESULTS)
    p.add_argument("--summarise-only", action="store_true")
    p.add_argument("--separate", action="store_true",
                   help="also time one SAMD run per scenario (seed 0) against the joint run of all")
    p.add_argument("--scenarios", nargs="+", default=None,
                   help="train and score only these scenarios' students (default: every scenario); their "
                        "predictions are kept under --workdir like the others', so give each set its own")
    a = p.parse_args(argv)
    art = artifacts(a.run, a.transform, a.teacher)
    scenarios_csv = os.path.join(a.data, "scenarios.csv")
    roles = {r["scenario_id"]: r["role"] for r in samd_trainer.read_scenarios(scenarios_csv)}
    rows, scenario, click = test_rows(art["raw_test"])
    keep = keep_predictions(art["root"], scenario, click)
    if a.scenarios:  # the other scenarios' rows have no student to score them
        chosen = np.isin(scenario, a.scenarios)
        rows, scenario, click = [r for r, c in zip(rows, chosen) if c], scenario[chosen], click[chosen]
        keep = {name: pred[chosen] for name, pred in keep.items()}
        roles = {s: r for s, r in roles.items() if s in a.scenarios}
    t0 = time.time()
    if not a.summarise_only:
        for seed in a.seeds:
            for v in a.variants:
                out = os.path.join(a.workdir, f"{v}_s{seed}")
                if os.path.exists(os.path.join(out, "predictions.npy")):
                    continue
                report, wall = train_variant(art, scenarios_csv, v, seed, a.steps, a.epochs, a.eval_steps, out,
                                             scenarios=a.scenarios)
                np.save(os.path.join(out, "predictions.npy"), score_students(os.path.join(out, "model"), rows,
                                                                              scenario))
                print(f"{v} seed {seed}: {wall:.0f}s", flush=True)
    result = summarise(a.workdir, a.variants, a.seeds, click, scenario, roles, keep)
    if a.separate:  # the product's claim: one process for N students costs less than N processes
        joint = train_variant(art, scenarios_csv, "samd", 0, a.steps, a.epochs, a.eval_steps,
                              os.path.join(a.workdir, "timing_joint"), scenarios=a.scenarios)[1]
        separate = sum(train_variant(art, scenarios_csv, "samd", 0, a.steps, a.epochs, a.eval_steps,
                                     os.path.join(a.workdir, f"timing_{sid}"), scenarios=[sid])[1] for sid in roles)
        result["wall_seconds"] = {"joint": round(joint, 1), "separate": round(separate, 1)}
        print(f"joint {joint:.0f}s vs {len(roles)} separate runs {separate:.0f}s")
    result.update({"command": "python -m bench.samd " + " ".join(argv if argv is not None else
                                                                   __import__("sys").argv[1:]),
                   "run": a.run, "teacher": a.teacher, "teacher_dir": art["teacher"], "steps": a.steps, "epochs": a.epochs, "seeds": a.seeds,
                   "variants": {v: VARIANTS[v] for v in a.variants}, "roles": roles,
                   "seconds": round(time.time() - t0, 1),
                   "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"})
    record.write(a.output, result)
    order = sorted(roles, key=lambda s: (GROUPS.index(roles[s]), s))
    print_table(result, order)
    print(f"\nwrote {a.output}")


if __name__ == "__main__":
    main()
