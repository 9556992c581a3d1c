"""ADL benchmarks: training throughput against the baselines, and the cluster-number sweep.

    TF_USE_LEGACY_KERAS=1 .venv/bin/python -m bench.adl speed [--steps 100] [--clusters 1 3 9] [--decompose]
                                                              [--adl-file OLD_ADL.py ...]
    TF_USE_LEGACY_KERAS=1 .venv/bin/python -m bench.adl sweep-k --clusters 1 3 9 --base /tmp/keep_samd_quality
                                                                [--seed 0] [--workdir /tmp/adl_sweep]

speed: training steps per second of ADL (one per K), the shared bottom and MMoE at the
same sizes (bottom (128, 64), towers (32,), embeddings 16; `--bottom-units`,
`--tower-units` change both) and batch 512, on random
batches with the `rich` preset's vocabulary sizes. Each model runs its compiled
`train_step` (a tf.function) for `--warmup` steps, then is timed over `--steps`;
the models are interleaved `--repeats` times on `--threads` threads (default 1) and
the best run is kept, the least disturbed by other load. The
section 3.5 claim is that ADL trains faster than enumerated models; here the fair
reference is the shared bottom, the cheapest network of the same sizes. `--adl-file`
times other versions of `models/adl.py` beside it, named by file stem (e.g.
`git show HEAD~1:models/adl.py > /tmp/old_adl.py` -> rows `old_adl_k3`, ...). `--decompose`
adds ADL with its routing skipped (`adl_k3_no_routing`: rows split in turn, the
partitioned network only) and `adl_k1_no_routing_no_partition` (Equation 6's kernels
alone), so the gap to the shared bottom splits into routing, partition and Equation 6.
`star_m8` is the model section 3.5 compares with: STAR's structure, Equation 6's layers with
one partition per scenario (`--star-scenarios`, M = 8 as in the generated data), routed by
the scenario id: P x (M + 1) parameters against ADL's P x (K + 1) (Table 2).

pipeline-speed: training examples/s as the pipeline's Trainer sees them (the measure that matters):
each model (`--models`, default shared_bottom adl mmoe) fits `--steps` steps of batch 512 on
a finished Transform's train split through tfxio with TensorFlow's default threads; input
decoding and the model share the 2 cores, so a slower model step may or may not show.
The models take turns, order alternating; each is compared with the shared bottom run
beside it (mean ratio and t interval over the repeats).

    TF_USE_LEGACY_KERAS=1 .venv/bin/python -m bench.adl pipeline-speed --base /tmp/keep_samd_quality

sweep-k (paper Figure 3): for each K, bench.quality on one seed with ADL's
`num_clusters` overridden, reusing a finished Transform (`--base`); prints the click
AUC (ALL) per K. Minutes per K.

Timings are never asserted in tests: they depend on the machine and its load.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np

VOCAB = {"user_id": 1_002, "item_id": 2_002, "category_id": 62, "shop_id": 252, "scenario_id": 10,
         "user_gender": 5, "user_age_bucket": 9, "hour": 26, "member_level": 8, "pay_channel": 6,
         "device_type": 6, "live_room_id": 60}
SEQUENCES = {"hist_item_ids": "item_id", "hist_category_ids": "category_id"}
VOCAB.update({seq: VOCAB[target] for seq, target in SEQUENCES.items()})  # as trainers.generic.all_vocab_sizes
HIST = 20


def random_batch(rng, n):
    import tensorflow as tf

    f = {k: tf.constant(rng.integers(1, v, n), tf.int64) for k, v in VOCAB.items() if k not in SEQUENCES}
    for name, target in SEQUENCES.items():
        ids = rng.integers(1, VOCAB[target], (n, HIST))
        ids[rng.random((n, HIST)) < 0.3] = 0  # padding
        f[name] = tf.constant(ids, tf.int64)
    for name in ("item_price", "user_scenario_exposures", "item_scenario_exposures"):
        f[name] = tf.constant(rng.normal(size=n), tf.float32)
    click = rng.random(n) < 0.1
    f["click"] = tf.constant(click, tf.float32)
    f["conversion"] = tf.constant(click & (rng.random(n) < 0.3), tf.float32)
    f["cart"] = tf.constant(click & (rng.random(n) < 0.3), tf.float32)
    return f


def _adl_module(path):
    if not path:
        from models import adl
        return adl
    spec = importlib.util.spec_from_file_location(f"adl_under_test_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def steps_per_second(model, batches, warmup: int, steps: int) -> float:
    import tensorflow as tf
    import tf_keras

    model.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
    step = tf.function(model.train_step)
    for i in range(warmup):
        step(batches[i % len(batches)])
    t0 = time.perf_counter()
    for i in range(steps):
        logs = step(batches[i % len(batches)])
    float(logs["loss"])  # waits for the last step
    return steps / (time.perf_counter() - t0)


def speed(a) -> dict:
    import tensorflow as tf
    import tf_keras

    # One thread, best of the repeats: on a shared machine the fastest run is the least disturbed.
    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(a.threads)

    from models.baselines import BaselineConfig, MMoEModel, SharedBottomModel

    tf_keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    batches = [random_batch(rng, a.batch) for _ in range(8)]
    sizes = {"bottom_units": tuple(a.bottom_units), "tower_units": tuple(a.tower_units)}
    models = {"shared_bottom": lambda: SharedBottomModel(BaselineConfig(**sizes), VOCAB),
              "mmoe": lambda: MMoEModel(BaselineConfig(**sizes), VOCAB)}
    if a.decompose:  # where ADL's extra time goes, one mechanism removed at a time
        from models import adl
        for k in a.clusters:
            models[f"adl_k{k}_no_routing"] = lambda k=k: _without_routing(adl, k, sizes)
        models["adl_k1_no_routing_no_partition"] = lambda: _without_routing(adl, 1, sizes, partition=False)
    if a.star_scenarios:
        from models import adl
        models[f"star_m{a.star_scenarios}"] = lambda: _star(adl, a.star_scenarios, sizes)
    for path in [None] + list(a.adl_file):
        adl = _adl_module(path)
        prefix = "adl" if path is None else os.path.splitext(os.path.basename(path))[0]
        for k in a.clusters:
            models[f"{prefix}_k{k}"] = lambda k=k, adl=adl: adl.AdlModel(adl.ADLConfig(num_clusters=k, **sizes),
                                                                         VOCAB)
    results = {}
    for _ in range(a.repeats):  # interleaved, so a load change hits every model alike
        for name, make in models.items():
            results.setdefault(name, []).append(steps_per_second(make(), batches, a.warmup, a.steps))
    table = {name: {"steps_per_second": float(np.max(v)), "examples_per_second": float(np.max(v) * a.batch),
                    "runs": [round(x, 2) for x in v]} for name, v in results.items()}
    reference = table["shared_bottom"]["steps_per_second"]
    for row in table.values():
        row["vs_shared_bottom"] = round(row["steps_per_second"] / reference, 3)
    return {"batch": a.batch, "steps": a.steps, "threads": a.threads, **sizes,
            "adl_files": ["models/adl.py"] + list(a.adl_file), "models": table}


def _without_routing(adl, k, sizes, partition=True):
    """ADL's network with the routing skipped: rows go to clusters in turn (row i to i mod K), or with
    `partition=False` (K = 1) straight through the multi-distribution layers, no partition or stitch.
    What is left of ADL is Equation 6's kernels; the difference to the shared bottom is their cost."""
    import tensorflow as tf

    from models.keep import TASKS

    class NoRouting(adl.AdlModel):
        def route(self, e, training=None):
            return tf.cast(tf.math.floormod(tf.range(tf.shape(e)[0]), k), tf.int64)

        def cluster_logits(self, x, cluster, training=None):
            if partition:
                return super().cluster_logits(x, cluster, training=training)
            h = self.bottom([x], training=training)
            return {t: tf.reshape(self.towers[t](h, training=training)[0], [-1]) for t in TASKS}

    return NoRouting(adl.ADLConfig(num_clusters=k, **sizes), VOCAB)


def _star(adl, m, sizes):
    """STAR's structure, the enumerated model of the paper's Table 2 (P x (M + 1)) that section 3.5
    says ADL trains faster than: Equation 6's layers with one partition per scenario (K = M), rows
    sent by their scenario id (mod M), no routing."""
    import tensorflow as tf

    class Star(adl.AdlModel):
        def call(self, features, training=None):
            self._scenario = features["scenario_id"]  # read by route() in the same trace
            return super().call(features, training=training)

        def route(self, e, training=None):
            return tf.math.floormod(self._scenario, m)

    return Star(adl.ADLConfig(num_clusters=m, **sizes), VOCAB)


def pipeline_speed(a) -> dict:
    """Training examples/s of each model on a finished Transform's examples, through the Trainer's input
    pipeline (tfxio TFExampleRecord, shuffle buffer 20k, batch 512, prefetch), TensorFlow's default threads.

    Only the fit's steps are timed (after one warm-up step), no validation; the models take turns,
    `--repeats` times, in reverse order every other repeat (so neither always runs first). Reported
    per model: the best run, and against the shared bottom the per-repeat ratios (paired: the two
    ran back to back) with their mean and Student's t 95% interval. Input decoding shares the cores
    and its speed varies from run to run, so one run per model says little.
    """
    import glob as globlib

    import tensorflow as tf
    import tensorflow_transform as tft
    import tf_keras
    from tfx_bsl.public import tfxio

    from bench.quality import required_transform
    from models import registry
    from trainers.generic import all_vocab_sizes

    batch_size = a.batch

    head = required_transform(os.path.join(a.base, "transform"))
    tft_output = tft.TFTransformOutput(head.transform_graph)
    files = os.path.join(head.transformed_examples, "Split-train", "*")
    if not globlib.glob(files):
        raise FileNotFoundError(files)
    source = tfxio.TFExampleRecord(files, schema=tft_output.transformed_metadata.schema)
    vocab = all_vocab_sizes(tft_output)
    results = {}
    for repeat in range(a.repeats):
        for name in (a.models if repeat % 2 == 0 else a.models[::-1]):
            tf_keras.utils.set_random_seed(0)
            model, config = registry.get(name).build({"batch_size": batch_size}, vocab)
            model.compile()
            data = source.TensorFlowDataset(tfxio.TensorFlowDatasetOptions(
                batch_size=batch_size, shuffle=True, shuffle_buffer_size=20_000)).prefetch(tf.data.AUTOTUNE)
            model.fit(data, epochs=1, steps_per_epoch=1, verbose=0)  # traces the step, fills the buffer
            t0 = time.perf_counter()
            model.fit(data, epochs=1, steps_per_epoch=a.steps, verbose=0)
            results.setdefault(name, []).append(a.steps * batch_size / (time.perf_counter() - t0))
            print(f"{name}: {results[name][-1]:.0f} examples/s", flush=True)
    reference = results.get("shared_bottom")
    models = {}
    for n, v in results.items():
        models[n] = {"examples_per_second": round(max(v)), "runs": [round(x) for x in v]}
        if reference:
            models[n]["vs_shared_bottom"] = round(max(v) / max(reference), 3)
            models[n]["paired_ratio"] = paired_ratio(v, reference)
    return {"base": a.base, "steps": a.steps, "batch": batch_size, "repeats": a.repeats, "models": models}


def paired_ratio(runs, reference, level: float = 0.95) -> dict:
    """Mean of runs[i] / reference[i] (the same repeat) and its Student's t interval."""
    from scipy import stats

    ratios = np.asarray(runs) / np.asarray(reference)
    if len(ratios) < 2:
        return {"mean": round(float(ratios.mean()), 3), "ci95": None}
    half = stats.t.ppf((1 + level) / 2, len(ratios) - 1) * ratios.std(ddof=1) / np.sqrt(len(ratios))
    return {"mean": round(float(ratios.mean()), 3),
            "ci95": [round(float(ratios.mean() - half), 3), round(float(ratios.mean() + half), 3)]}


def sweep_k(a) -> dict:
    out = {}
    for k in a.clusters:
        workdir = os.path.join(a.workdir, f"k{k}")
        output = os.path.join(workdir, "quality.json")
        options = {"unified": {"configs": {"adl": {"num_clusters": k}}}}
        cmd = [sys.executable, "-m", "bench.quality", "--models", "adl", "--seeds", str(a.seed), "--workdir", workdir,
               "--base", a.base, "--output", output, "--options", json.dumps(options)]
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        with open(output) as f:
            result = json.load(f)
        out[k] = _click_auc_all(result, "adl")
        print(f"K={k}: click AUC (ALL) {out[k]}", flush=True)
    return {"seed": a.seed, "click_auc_all": out}


def _click_auc_all(result, model):
    """The click AUC over all test rows (mean over the seeds) from a bench.quality table."""
    return result["models"][model]["ALL"]["click"]["auc"]["mean"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--clusters", type=int, nargs="+", default=[1, 3, 9])
    s.add_argument("--batch", type=int, default=512)
    s.add_argument("--steps", type=int, default=100)
    s.add_argument("--warmup", type=int, default=10)
    s.add_argument("--repeats", type=int, default=2)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--bottom-units", type=int, nargs="+", default=[128, 64])
    s.add_argument("--tower-units", type=int, nargs="+", default=[32])
    s.add_argument("--adl-file", nargs="*", default=[], help="other models/adl.py versions to time beside it")
    s.add_argument("--decompose", action="store_true",
                   help="also time ADL without its routing (per K), and at K=1 without the partition")
    s.add_argument("--star-scenarios", type=int, default=8,
                   help="M: also time STAR's per-scenario structure with M scenarios (the paper's "
                        "comparison); 0 skips it")
    q = sub.add_parser("pipeline-speed")
    q.add_argument("--base", default="/tmp/keep_samd_quality", help="a bench/quality.py workdir (its Transform)")
    q.add_argument("--models", nargs="+", default=["shared_bottom", "adl", "mmoe"])
    q.add_argument("--steps", type=int, default=300)
    q.add_argument("--repeats", type=int, default=3)
    q.add_argument("--batch", type=int, default=512, help="one batch for every model: examples/s compare alike")
    k = sub.add_parser("sweep-k")
    k.add_argument("--clusters", type=int, nargs="+", default=[1, 3, 9])
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--base", required=True)
    k.add_argument("--workdir", default="/tmp/adl_sweep")
    a = p.parse_args(argv)
    result = {"speed": speed, "pipeline-speed": pipeline_speed, "sweep-k": sweep_k}[a.command](a)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
