"""Benchmark: AUC per scenario and task of every pushed unified model, training examples/s, latency.

Reads a finished pipeline run (its pushed SavedModels, ExampleGen's raw test split and
each Trainer's history.json), scores the raw test examples through each SavedModel and
compares with the oracle AUC from the generator's true probabilities. With
`--grec-routings`, it also trains GRec once per routing strategy on the run's
transformed examples (same steps as the pipeline) and scores each the same way.

    .venv/bin/python -m bench.unified --run runs [--grec-routings] [--steps 600] [--output FILE]

Writes bench/results/unified.json (or --output) and prints a table.
"""

import argparse
import glob
import json
import os
import platform
import tempfile
import time

import tensorflow as tf

from bench import record
from components.model_evaluator import metrics as M
from models import registry

TASKS = M.TASKS
MODELS = registry.names("general") + registry.names("unified")  # one SavedModel each, served as its name


def load_eval(run):
    return M.load_examples(M.eval_files(
        sorted(glob.glob(os.path.join(run, "pipelines", "keep_samd", "CsvExampleGen", "examples", "*")))[-1]))


def auc_table(pred, table):
    """{slice: {task: AUC}} from the evaluator's metrics (conversion and cart over clicks)."""
    return {s: {t: m["auc"] for t, m in per.items()} for s, per in M.evaluate(table, pred).items()}


def train_grec_routing(run, routing, steps, epochs=6):
    """GRec with one routing strategy, trained like the pipeline's Trainer.

    Returns (SavedModel path, training examples/s, MoE FLOPs per example on an eval batch).
    """
    import tensorflow_transform as tft

    from models import export
    from models import registry
    from pipelines.options import PipelineOptions
    from trainers.epochs import early_stopping
    from trainers.generic import all_vocab_sizes

    root = os.path.join(run, "pipelines", "keep_samd", "Transform")
    tft_output = tft.TFTransformOutput(sorted(glob.glob(os.path.join(root, "transform_graph", "*")))[-1])
    examples = sorted(glob.glob(os.path.join(root, "transformed_examples", "*")))[-1]
    spec = tft_output.transformed_feature_spec()
    model, config = registry.get("grec").build({"routing": routing}, all_vocab_sizes(tft_output))
    model.compile()

    def dataset(split, shuffle):
        files = sorted(glob.glob(os.path.join(examples, f"Split-{split}", "*")))
        ds = tf.data.TFRecordDataset(files, compression_type="GZIP")
        if shuffle:
            ds = ds.shuffle(20_000).repeat()
        return ds.batch(config.batch_size).map(lambda x: tf.io.parse_example(x, spec))

    t0 = time.time()
    history = model.fit(dataset("train", True), epochs=epochs, steps_per_epoch=max(1, steps // epochs),
                        validation_data=dataset("validation", False), verbose=0,
                        callbacks=[early_stopping(PipelineOptions().patience)])
    seconds = time.time() - t0
    out = tempfile.mkdtemp()
    export.export_saved_model(model, tft_output, out, outputs={"serving_default": TASKS}, model_name="grec")
    trained = len(history.history["loss"]) * max(1, steps // epochs) * config.batch_size
    from models.grec import count_expert_flops

    batch = next(iter(dataset("test", False)))
    rows = int(tf.shape(batch["click"])[0])
    flops = {k: (v / rows if k.endswith("flops") else v) for k, v in count_expert_flops(model, batch).items()}
    return out, trained / seconds, flops


def latency_ms(serve, rows, batches=(1, 64), calls=60):
    """In-process p50 / p99 of the serving signature per batch size (after a warm-up)."""
    import numpy as np

    out = {}
    for b in batches:
        batch = tf.constant(list(rows[:b]))
        for _ in range(5):
            serve(examples=batch)
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            serve(examples=batch)
            times.append((time.perf_counter() - t0) * 1000)
        out[f"batch_{b}"] = {"p50": round(float(np.percentile(times, 50)), 2),
                             "p99": round(float(np.percentile(times, 99)), 2)}
    return out


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--run", default="runs")
    p.add_argument("--grec-routings", action="store_true")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results", "unified.json"))
    a = p.parse_args(argv)
    rows, table = load_eval(a.run)
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "eval_rows": len(rows), "models": {}}
    results["oracle"] = {s: {t: m["oracle_auc"] for t, m in per.items()}
                         for s, per in M.evaluate(table, {t: table[M.ORACLE[t]] for t in TASKS}).items()}
    for name in MODELS:
        versions = sorted(glob.glob(os.path.join(a.run, "serving", name, "*", "saved_model.pb")))
        if not versions:
            continue
        serve = tf.saved_model.load(os.path.dirname(versions[-1])).signatures["serving_default"]
        entry = {"auc": auc_table(M.score(serve, rows), table), "latency_ms": latency_ms(serve, rows)}
        title = registry.get(name).title
        hist = glob.glob(os.path.join(a.run, "pipelines", "keep_samd", f"{title}Trainer", "model_run", "*",
                                      "history.json"))
        if hist:
            entry["examples_per_second"] = round(json.load(open(sorted(hist)[-1]))["examples_per_second"])
        results["models"][name] = entry
    if a.grec_routings:
        for routing in ("token", "sentence", "task", "task_sentence"):
            path, eps, flops = train_grec_routing(a.run, routing, a.steps)
            serve = tf.saved_model.load(path).signatures["serving_default"]
            results["models"][f"grec[{routing}]"] = {"auc": auc_table(M.score(serve, rows), table),
                                                     "examples_per_second": round(eps),
                                                     "moe_flops_per_example": flops,
                                                     "latency_ms": latency_ms(serve, rows)}
    record.write(a.output, results)
    scenarios = list(results["oracle"])
    print("model".ljust(22) + "".join(s[:12].rjust(13) for s in scenarios) + "   ex/s")
    for t in TASKS:
        print(f"-- {t} AUC")
        for name, entry in [("oracle", {"auc": results["oracle"]})] + list(results["models"].items()):
            cells = "".join((f"{entry['auc'][s][t]:.3f}" if entry["auc"][s][t] is not None else "n/a").rjust(13)
                            for s in scenarios)
            print(name.ljust(22) + cells + f"   {entry.get('examples_per_second', '')}")
    print("-- in-process latency, ms p50/p99: batch 1 | batch 64")
    for name, entry in results["models"].items():
        lat = entry["latency_ms"]
        print(f"{name.ljust(22)}{lat['batch_1']['p50']}/{lat['batch_1']['p99']} | "
              f"{lat['batch_64']['p50']}/{lat['batch_64']['p99']}")
    flops = {n: e["moe_flops_per_example"] for n, e in results["models"].items() if "moe_flops_per_example" in e}
    if flops:
        print("-- GRec MoE FLOPs per example (inference; router + experts)")
        for name, f in flops.items():
            print(f"{name.ljust(22)}{f['flops']:,.0f} = router {f['router_flops']:,.0f} + experts "
                  f"{f['expert_flops']:,.0f}")


if __name__ == "__main__":
    main()
