"""Benchmark: AUC per scenario and task of every pushed unified model, and training examples/s.

Reads a finished pipeline run (its pushed SavedModels, ExampleGen's raw eval split and
each Trainer's history.json), scores the raw eval examples through each SavedModel and
compares with the oracle AUC from the generator's true probabilities. With
`--grec-routings`, it also trains GRec once per routing strategy on the run's
transformed examples (same steps as the pipeline) and scores each the same way.

    .venv/bin/python -m bench.unified --run runs [--grec-routings] [--steps 600]

Writes bench/results/unified.json and prints a table.
"""

import argparse
import glob
import json
import os
import platform
import tempfile
import time

import numpy as np
import tensorflow as tf
from sklearn.metrics import roc_auc_score

TASKS = ("click", "conversion", "cart")
ORACLE = {"click": "p_click", "conversion": "p_conversion", "cart": "p_cart"}
MODELS = ("keep_general", "pepnet", "adl", "grec", "shared_bottom", "mmoe")


def _value(ex, name):
    f = ex.features.feature[name]
    for kind in ("bytes_list", "int64_list", "float_list"):
        v = getattr(f, kind).value
        if len(v):
            return v[0].decode() if isinstance(v[0], bytes) else v[0]
    return None


def load_eval(run):
    pattern = os.path.join(run, "pipelines", "keep_samd", "CsvExampleGen", "examples", "*", "Split-eval", "*")
    rows = [r.numpy() for r in tf.data.TFRecordDataset(sorted(glob.glob(pattern)), compression_type="GZIP")]
    exs = [tf.train.Example.FromString(r) for r in rows]
    table = {"scenario": np.array([_value(e, "scenario_id") for e in exs])}
    for t in TASKS:
        table[t] = np.array([_value(e, t) for e in exs], dtype=np.int64)
        table[ORACLE[t]] = np.array([_value(e, ORACLE[t]) for e in exs], dtype=np.float64)
    return rows, table


def score(signature, rows):
    out = {t: [] for t in TASKS}
    for s in range(0, len(rows), 2048):
        res = signature(examples=tf.constant(rows[s:s + 2048]))
        for t in TASKS:
            out[t].append(res[t].numpy().reshape(-1))
    return {t: np.concatenate(v) for t, v in out.items()}


def auc_table(pred, table, key=None):
    key = key or (lambda t: pred[t])
    result = {}
    for s in ["ALL"] + sorted(set(table["scenario"].tolist())):
        m = np.ones(len(table["scenario"]), bool) if s == "ALL" else table["scenario"] == s
        per = {}
        for t in TASKS:
            mt = m if t == "click" else m & (table["click"] == 1)
            y = table[t][mt]
            per[t] = float(roc_auc_score(y, key(t)[mt])) if len(set(y.tolist())) == 2 else None
        result[s] = per
    return result


def train_grec_routing(run, routing, steps, epochs=6):
    """GRec with one routing strategy, trained like the pipeline's Trainer; returns a SavedModel path."""
    import tensorflow_transform as tft
    import tf_keras

    from models import export
    from models.unified_trainer import all_vocab_sizes, build

    root = os.path.join(run, "pipelines", "keep_samd", "Transform")
    tft_output = tft.TFTransformOutput(sorted(glob.glob(os.path.join(root, "transform_graph", "*")))[-1])
    examples = sorted(glob.glob(os.path.join(root, "transformed_examples", "*")))[-1]
    spec = tft_output.transformed_feature_spec()
    model, config = build("grec", {"routing": routing}, all_vocab_sizes(tft_output))
    model.compile(optimizer=tf_keras.optimizers.Adam(config.learning_rate))

    def dataset(split, shuffle):
        files = sorted(glob.glob(os.path.join(examples, f"Split-{split}", "*")))
        ds = tf.data.TFRecordDataset(files, compression_type="GZIP")
        if shuffle:
            ds = ds.shuffle(20_000).repeat()
        return ds.batch(config.batch_size).map(lambda x: tf.io.parse_example(x, spec))

    t0 = time.time()
    history = model.fit(dataset("train", True), epochs=epochs, steps_per_epoch=max(1, steps // epochs),
                        validation_data=dataset("eval", False), verbose=0,
                        callbacks=[tf_keras.callbacks.EarlyStopping(monitor="val_auc_click", mode="max", patience=2,
                                                                    restore_best_weights=True)])
    seconds = time.time() - t0
    out = tempfile.mkdtemp()
    export.export_saved_model(model, tft_output, out, outputs={"serving_default": TASKS}, model_name="grec")
    trained = len(history.history["loss"]) * max(1, steps // epochs) * config.batch_size
    return out, trained / seconds


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--run", default="runs")
    p.add_argument("--grec-routings", action="store_true")
    p.add_argument("--steps", type=int, default=600)
    a = p.parse_args(argv)
    rows, table = load_eval(a.run)
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "eval_rows": len(rows), "models": {}}
    results["oracle"] = auc_table(None, table, key=lambda t: table[ORACLE[t]])
    for name in MODELS:
        versions = sorted(glob.glob(os.path.join(a.run, "serving", name, "*", "saved_model.pb")))
        if not versions:
            continue
        serve = tf.saved_model.load(os.path.dirname(versions[-1])).signatures["serving_default"]
        entry = {"auc": auc_table(score(serve, rows), table)}
        title = "".join(part.capitalize() for part in name.split("_"))
        hist = glob.glob(os.path.join(a.run, "pipelines", "keep_samd", f"{title}Trainer", "model_run", "*",
                                      "history.json"))
        if hist:
            entry["examples_per_second"] = round(json.load(open(sorted(hist)[-1]))["examples_per_second"])
        results["models"][name] = entry
    if a.grec_routings:
        for routing in ("token", "sentence", "task", "task_sentence"):
            path, eps = train_grec_routing(a.run, routing, a.steps)
            serve = tf.saved_model.load(path).signatures["serving_default"]
            results["models"][f"grec[{routing}]"] = {"auc": auc_table(score(serve, rows), table),
                                                     "examples_per_second": round(eps)}
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    with open(os.path.join(os.path.dirname(__file__), "results", "unified.json"), "w") as f:
        json.dump(results, f, indent=1)
    scenarios = list(results["oracle"])
    print("model".ljust(22) + "".join(s[:12].rjust(13) for s in scenarios) + "   ex/s")
    for t in TASKS:
        print(f"-- {t} AUC")
        for name, entry in [("oracle", {"auc": results["oracle"]})] + list(results["models"].items()):
            cells = "".join((f"{entry['auc'][s][t]:.3f}" if entry["auc"][s][t] is not None else "n/a").rjust(13)
                            for s in scenarios)
            print(name.ljust(22) + cells + f"   {entry.get('examples_per_second', '')}")


if __name__ == "__main__":
    main()
