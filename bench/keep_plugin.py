"""Benchmark: KEEP's knowledge plug-in (the paper's Tables 2/3 and 8) and the plugged serving
path against a SAMD student (Figure 6).

Quality, on a pipeline run's transformed examples: the downstream model of the
sub-scenarios trained without knowledge (base) and with knowledge from
* full: KEEP's K(u, i) from the run's general model, per (user, item) pair (not
  cacheable: a forward pass per pair);
* decomposition, degeneration, both: heads trained here on the train split, their
  cache built from the train days only; training rows joined point in time (each
  key as of the day before the row's), validation and test rows looked up in the
  cache by raw ids, as the pipeline serves them.
Every variant: the same rows and seeds, trained by the pipeline's epoch rule (trainers.epochs:
passes over the train rows up to the epoch cap, the best validation epoch restored); click
GAUC (and AUC) per sub-scenario on the test split (the last day), averaged over seeds, and
each knowledge variant's paired click-AUC difference against `base` on the same test rows:
per seed (DeLong) and over the seeds (components.model_evaluator.metrics).

Latency, on the run's pushed models (in-process, and over gRPC to the embedded server
in its own process): a SAMD student's one Predict vs the plugged path (knowledge
lookup + downstream Predict; over gRPC also the client's version call).

    .venv/bin/python -m bench.keep_plugin --run runs --data data/default [--seeds 3] [--scenario banner]
    # a bench.quality seed (its Transform imported):
    .venv/bin/python -m bench.keep_plugin --run $Q/seed0 --data $Q/data --transform $Q/transform

Writes bench/results/keep_plugin.json.
"""

import argparse
import glob
import os
import platform
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import record  # noqa: E402
from trainers.records import seed_everything  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ("base", "full", "decomposition", "degeneration", "both")


def _latest(*parts):
    found = sorted(glob.glob(os.path.join(*parts, "*")), key=lambda p: int(os.path.basename(p)))
    if not found:
        raise SystemExit(f"nothing under {os.path.join(*parts)}: run the pipeline first")
    return found[-1]


def _knowledge_full(keras_dir, rows, batch=4096):
    from trainers.samd import load_teacher

    names = list(rows)
    teacher = load_teacher(keras_dir, {k: tf.constant(rows[k][:1]) for k in names})
    out = []
    for s in range(0, len(rows["click"]), batch):
        out.append(teacher({k: tf.constant(rows[k][s:s + batch]) for k in names}, training=False)["knowledge"].numpy())
    return np.concatenate(out)


def _knowledge_cached(strategy, tft_output, train_all, validation_all, steps, epochs, train, others):
    """Trains the strategy's heads on the train split and caches the train days; K̂ of `train`'s
    rows point in time (as of the day before each), of each of `others` by cache lookup."""
    from models import features as F
    from trainers import knowledge_center as KC
    from models.keep_cache import CacheableKnowledgeConfig, KnowledgeCache, daily_tables, knowledge_as_of, \
        latest_tables
    from trainers.transformed_data import raw_ids
    from pipelines.options import PipelineOptions

    seed_everything(0)
    heads = KC.train(CacheableKnowledgeConfig(strategy=strategy), tft_output, train_all, validation_all, steps,
                     epochs, PipelineOptions().patience)  # the pipeline's rule
    daily = daily_tables(heads, KC.knowledge_batches(heads, tft_output, train_all))
    cache = KnowledgeCache(strategy, latest_tables(daily))

    def ids(rows):
        return {k: raw_ids(tft_output, k, rows[k]) for k in KC.RAW_KEYS}

    t = ids(train)
    out = [knowledge_as_of(daily, strategy, t["user_id"], t["item_id"], t["category_id"], train[F.DAY])]
    for rows in others:
        o = {k: v.astype(bytes) for k, v in ids(rows).items()}
        out.append(cache.lookup(user_id=tf.constant(o["user_id"]), item_id=tf.constant(o["item_id"]),
                                category_id=tf.constant(o["category_id"]))["knowledge"].numpy())
    return out


def _transform(root, transform):
    """(transformed examples folder, transform graph folder): the run's Transform's, or the finished
    pipelines.transform_only folder `transform` the run imported (bench.quality)."""
    if not transform:
        return _latest(root, "Transform", "transformed_examples"), _latest(root, "Transform", "transform_graph")
    from bench.quality import required_transform

    head = required_transform(transform)
    return head.transformed_examples, head.transform_graph


def quality(run_dir, data_root, steps, seeds, knowledge_steps, epochs, transform=None):
    import tensorflow_transform as tft

    from components.model_evaluator import metrics as M
    from trainers import downstream as D
    from models import features as F
    from models.keep_plugin import KNOWLEDGE, DownstreamConfig
    from pipelines.options import PipelineOptions
    from trainers.generic import keras_model_dir
    from trainers.transformed_data import load_transformed, raw_ids, select, transformed_index

    root = os.path.join(run_dir, "pipelines", "keep_samd")
    examples, graph = _transform(root, transform)
    tft_output = tft.TFTransformOutput(graph)
    train_all = load_transformed(os.path.join(examples, "Split-train", "*"), tft_output)
    validation_all = load_transformed(os.path.join(examples, "Split-validation", "*"), tft_output)
    test_all = load_transformed(os.path.join(examples, "Split-test", "*"), tft_output)
    sub = D.sub_scenarios(os.path.join(data_root, "scenarios.csv"))
    sub_index = [transformed_index(tft_output, "scenario_id", s) for s in sub]
    train = select(train_all, np.isin(train_all["scenario_id"], sub_index))
    validation = select(validation_all, np.isin(validation_all["scenario_id"], sub_index))
    test = select(test_all, np.isin(test_all["scenario_id"], sub_index))
    test_scenario = raw_ids(tft_output, "scenario_id", test["scenario_id"])
    patience = PipelineOptions().patience

    knowledge = {"base": (None, None, None)}
    t = time.perf_counter()
    keras_dir = keras_model_dir(os.path.join(_latest(root, "KeepTrainer", "model"), "Format-Serving"))
    knowledge["full"] = tuple(_knowledge_full(keras_dir, rows) for rows in (train, validation, test))
    for strategy in ("decomposition", "degeneration", "both"):
        knowledge[strategy] = tuple(_knowledge_cached(strategy, tft_output, train_all, validation_all,
                                                      knowledge_steps, epochs, train, (validation, test)))
    print(f"keep_plugin: knowledge computed in {time.perf_counter() - t:.0f} s", flush=True)

    vocab_sizes = {n: F.vocab_size(tft_output, n) for n in DownstreamConfig().id_features}
    results, predictions, best_epochs = {}, {}, {}
    for variant in VARIANTS:
        k_train, k_validation, k_test = knowledge[variant]
        tr, va, te = dict(train), dict(validation), dict(test)
        if k_train is not None:
            tr[KNOWLEDGE], va[KNOWLEDGE], te[KNOWLEDGE] = k_train, k_validation, k_test
        per_seed, predictions[variant], best_epochs[variant] = [], [], []
        for seed in range(seeds):
            seed_everything(seed)
            config = DownstreamConfig(knowledge_width=0 if k_train is None else int(k_train.shape[1]))
            model = D.build_model(config, vocab_sizes, tr)
            history = D.fit(model, tr, va, steps, epochs=epochs, patience=patience, verbose=0)
            curve = history.history["val_auc_click"]
            best_epochs[variant].append(int(np.argmax(curve)) + 1)
            pred = D.predict(model, te)
            predictions[variant].append(pred)
            scores = {"ALL": {"auc": M.auc(te["click"], pred), "gauc": M.gauc(te["user_id"], te["click"], pred)}}
            for s in sub:
                m = test_scenario == s
                scores[s] = {"auc": M.auc(te["click"][m], pred[m]),
                             "gauc": M.gauc(te["user_id"][m], te["click"][m], pred[m])}
            per_seed.append(scores)
        results[variant] = {s: {**{m: _mean([r[s][m] for r in per_seed]) for m in ("auc", "gauc")},
                                **{f"{m}_std": _std([r[s][m] for r in per_seed]) for m in ("auc", "gauc")}}
                            for s in per_seed[0]}
        print(f"keep_plugin: {variant:<13} click GAUC ALL {results[variant]['ALL']['gauc']:.4f} "
              f"± {results[variant]['ALL']['gauc_std'] or 0:.4f} AUC {results[variant]['ALL']['auc']:.4f} "
              f"best epochs {best_epochs[variant]}", flush=True)
    return {"train_rows": int(len(train["click"])), "validation_rows": int(len(validation["click"])),
            "test_rows": int(len(test["click"])), "scenarios": sub,
            "steps": steps, "epochs": epochs, "patience": patience, "seeds": seeds,
            "knowledge_steps": knowledge_steps, "best_epochs": best_epochs, "click": results,
            "paired_click_auc_vs_base": paired_vs_base(test["click"], predictions)}


def paired_vs_base(labels, predictions):
    """{variant: {"per_seed": [(diff, low, high)], "over_seeds": (mean, low, high) or None, "verdict"}}: each
    knowledge variant against `base` (the same downstream model without knowledge) on the same test rows,
    seed s against seed s."""
    from bench.render import verdict
    from components.model_evaluator import metrics as M

    out = {}
    for variant, preds in predictions.items():
        if variant == "base":
            continue
        pairs = list(zip(preds, predictions["base"]))
        per_seed = [M.paired_auc_difference(labels, a, b) for a, b in pairs]
        over = M.paired_auc_difference_over_seeds(labels, pairs)
        deciding = over or (per_seed[0] if len(per_seed) == 1 else None)
        side = "no difference" if deciding is None else verdict(deciding[1], deciding[2])
        verdict_text = side if side == "no difference" else f"{side} base"
        out[variant] = {"per_seed": [None if d is None else [round(x, 4) for x in d] for d in per_seed],
                        "over_seeds": None if over is None else [round(x, 4) for x in over], "verdict": verdict_text}
    return out


def _mean(values):
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 4) if values else None


def _std(values):
    values = [v for v in values if v is not None]
    return round(float(np.std(values, ddof=1)), 4) if len(values) > 1 else None


def _timed(fn, seconds):
    fn()
    lat, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t)
    lat = np.asarray(lat) * 1000
    return {"p50_ms": round(float(np.percentile(lat, 50)), 3), "p99_ms": round(float(np.percentile(lat, 99)), 3),
            "requests": len(lat)}


def latency(run_dir, scenario, seconds, batches=(1, 64)):
    from serving.client import KNOWLEDGE_KEYS, ServingClient, _raw_id
    from bench.serving import latest_version, load_examples

    serving = os.path.join(run_dir, "serving")
    pool = [e for e in load_examples(os.path.join(run_dir, "pipelines", "keep_samd", "CsvExampleGen", "examples",
                                                  "*", "Split-test", "*"), 20000)
            if tf.train.Example.FromString(e).features.feature["scenario_id"].bytes_list.value[0] == scenario.encode()]
    student = tf.saved_model.load(latest_version(os.path.join(serving, f"samd_{scenario}"))).signatures["serving_default"]
    cache = tf.saved_model.load(latest_version(os.path.join(serving, "keep_knowledge"))).signatures["serving_default"]
    downstream = tf.saved_model.load(latest_version(os.path.join(serving, "keep_downstream"))).signatures[
        "serving_default"]
    out = []
    for b in batches:
        examples = (pool * (b // len(pool) + 1))[:b]

        def plugged():
            ids = {k: tf.constant([_raw_id(e, k) for e in examples]) for k in KNOWLEDGE_KEYS}
            knowledge = cache(**ids)["knowledge"]
            return downstream(examples=tf.constant(examples), knowledge=knowledge)["click"].numpy()

        out.append({"mode": "in_process", "path": f"samd_{scenario}", "batch": b,
                    **_timed(lambda: student(examples=tf.constant(examples))["click"].numpy(), seconds)})
        out.append({"mode": "in_process", "path": "keep_knowledge + keep_downstream", "batch": b,
                    **_timed(plugged, seconds)})
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "serving.model_server",
                             f"--model_config_file={os.path.join(serving, 'models.config')}", "--port=0",
                             "--rest_api_port=0", "--file_system_poll_wait_seconds=0", "--log_level=WARNING"],
                            cwd=REPO, env=dict(os.environ, TF_USE_LEGACY_KERAS="1"), stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        port = int(dict(kv.split("=") for kv in line.split()[1:])["grpc_port"])
        with ServingClient(port=port) as client:
            for b in batches:
                examples = (pool * (b // len(pool) + 1))[:b]
                out.append({"mode": "grpc", "path": f"samd_{scenario}", "batch": b,
                            **_timed(lambda: client.predict(examples, f"samd_{scenario}"), seconds)})
                out.append({"mode": "grpc", "path": "predict_plugged (version + lookup + predict)", "batch": b,
                            **_timed(lambda: client.predict_plugged(examples), seconds)})
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    for r in out:
        print(f"keep_plugin latency: {r['mode']:<10} batch {r['batch']:>3} {r['path']:<46} p50 {r['p50_ms']:7.2f} ms "
              f"p99 {r['p99_ms']:7.2f} ms", flush=True)
    return out


def main(argv=None):
    from pipelines.options import PipelineOptions

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default="runs", help="a pipeline run's output folder (KEEP_SAMD_OUTPUT)")
    p.add_argument("--data", default="data/default", help="the run's data folder (its scenarios.csv)")
    defaults = PipelineOptions()
    p.add_argument("--steps", type=int, default=defaults.train_steps,
                   help="cap on each downstream training's steps (default: the pipeline's; epochs decide)")
    p.add_argument("--knowledge_steps", type=int, default=defaults.train_steps,
                   help="cap on each strategy's heads' training steps (default: the pipeline's)")
    p.add_argument("--epochs", type=int, default=defaults.epochs, help="epoch cap (default: the pipeline's)")
    p.add_argument("--transform", default=None,
                   help="the pipelines.transform_only folder the run imported (a bench.quality seed's)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--scenario", default="banner", help="the SAMD student the plugged path is compared with")
    p.add_argument("--seconds", type=float, default=3.0, help="per latency setting")
    p.add_argument("--skip_quality", action="store_true")
    p.add_argument("--output", default=os.path.join(REPO, "bench", "results", "keep_plugin.json"))
    a = p.parse_args(argv)
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                      f"TF {tf.__version__}", "run": os.path.abspath(a.run)}
    if not a.skip_quality:
        out["quality"] = quality(a.run, a.data, a.steps, a.seeds, a.knowledge_steps, a.epochs, a.transform)
    out["latency"] = latency(a.run, a.scenario, a.seconds)
    record.write(a.output, out)


if __name__ == "__main__":
    main()
