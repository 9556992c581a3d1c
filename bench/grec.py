"""GRec serving: an extracted (scenario, task) sub-network against the full model.

    TF_USE_LEGACY_KERAS=1 .venv/bin/python -m bench.grec [--calls 300] [--transform DIR] [--output FILE]

Builds GRec with the default config (E = 8, top-4) twice: with task-sentence routing
(the paper's choice) and with token routing. From the task-sentence model it extracts
the sub-network of one (scenario, task) (`models.grec.extract_subnetwork`: the shared
encoder, the k routed experts with their fixed weights, that task's head; no router).
Reports, per model:
* trainable parameters, and for the sub-network the bound k / E x full + non-MoE
  parameters of the full model;
* in-process batch-1 latency (p50 / p99 in ms over --calls calls of a tf.function on
  transformed features, after a warm-up), the three full models' outputs vs the one
  task of the sub-network;
* that the sub-network's logit equals the full model's on the benchmark row.
Weights are untrained (latency and sizes do not depend on them). Vocabulary sizes come
from a finished Transform (--transform, its transform_graph folder) or, by default,
from sizes like the rich preset's. Timings are only meaningful on an otherwise idle
machine.
"""

import argparse
import json
import os
import platform
import time

import numpy as np
import tensorflow as tf

from bench import record
from models import features as F
from models.grec import GRecConfig, GRecModel, count_params, extract_subnetwork

# The rich preset's vocabularies (+ absent + OOV buckets).
DEFAULT_VOCAB = {"user_id": 1008, "item_id": 2011, "category_id": 71, "shop_id": 261, "scenario_id": 19,
                 "user_gender": 14, "user_age_bucket": F.integer_vocab_size("user_age_bucket"),
                 "hour": F.integer_vocab_size("hour")}


def vocab_sizes(transform_dir=None):
    if not transform_dir:
        return dict(DEFAULT_VOCAB)
    import tensorflow_transform as tft

    out = tft.TFTransformOutput(transform_dir)
    return {n: F.vocab_size(out, n) for n in DEFAULT_VOCAB}


def one_row(vocab, scenario_id, seed=0):
    rng = np.random.default_rng(seed)
    f = {n: tf.constant([int(rng.integers(1, v))], tf.int64) for n, v in vocab.items()}
    f["scenario_id"] = tf.constant([scenario_id], tf.int64)
    hist = rng.integers(1, vocab["item_id"], (1, F.SEQUENCE_LENGTH))
    hist[:, 12:] = 0
    f["hist_item_ids"] = tf.constant(hist, tf.int64)
    f["hist_category_ids"] = tf.constant(np.where(hist > 0, hist % (vocab["category_id"] - 1) + 1, 0), tf.int64)
    for n in ("item_price",) + F.DOMAIN_STATISTICS:
        f[n] = tf.constant(rng.normal(size=1), tf.float32)
    return f


def latency_ms(fn, features, calls):
    for _ in range(20):
        fn(features)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        out = fn(features)
        [v.numpy() for v in out.values()]
        times.append((time.perf_counter() - t0) * 1000)
    return {"p50": round(float(np.percentile(times, 50)), 3), "p99": round(float(np.percentile(times, 99)), 3)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--transform", default=None)
    p.add_argument("--scenario", type=int, default=1)
    p.add_argument("--task", default="click")
    p.add_argument("--output", default=None)
    a = p.parse_args(argv)
    tf.random.set_seed(0)
    vocab = vocab_sizes(a.transform)
    row = one_row(vocab, a.scenario)
    models = {r: GRecModel(GRecConfig(routing=r), vocab) for r in ("task_sentence", "token")}
    for m in models.values():
        m(row)
    full = models["task_sentence"]
    sub = extract_subnetwork(full, a.scenario, a.task)
    c = full.config
    moe, total = count_params(full.moe), count_params(full)
    result = {
        "config": {"num_experts": c.num_experts, "top_k": c.top_k, "expert_units": c.expert_units,
                   "scenario": a.scenario, "task": a.task, "experts": list(sub.expert_ids)},
        "parameters": {"full_task_sentence": total, "full_token": count_params(models["token"]),
                       "full_moe": moe, "full_non_moe": total - moe, "subnetwork": count_params(sub),
                       "subnetwork_experts": count_params(sub.experts),
                       "subnetwork_bound": c.top_k / c.num_experts * total + (total - moe)},
    }
    exact = float(np.max(np.abs(sub(row)[f"{a.task}_logit"].numpy() - full(row)[f"{a.task}_logit"].numpy())))
    result["subnetwork_max_abs_logit_difference"] = exact
    fns = {"full_token": tf.function(lambda f: models["token"](f, training=False)),
           "full_task_sentence": tf.function(lambda f: full(f, training=False)),
           "subnetwork": tf.function(lambda f: sub(f, training=False))}
    result["batch1_latency_ms"] = {name: latency_ms(fn, row, a.calls) for name, fn in fns.items()}
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}"
    print(json.dumps(result, indent=1))
    if a.output:
        record.write(a.output, result)


if __name__ == "__main__":
    main()
