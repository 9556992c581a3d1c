"""Each model's validation click AUC at a few Adam learning rates, trained by the Trainer's rule.

    .venv/bin/python -m bench.learning_rate --base /tmp/keep_samd_quality [--models keep_general pepnet]
        [--rates 0.001 0.003] [--seeds 0] [--output bench/results/learning_rate.json]

Reads the Transform that `bench.quality` left in `--base` (time split) and trains each
registered model with every learning-rate field of its search space (PEPNet: both
optimizers') set to each rate. Everything else is the pipeline's Trainer: the options'
defaults give the model's config and batch, the epoch cap, the patience and the
validation rows (the first `eval_steps` batches of the validation day, the same after
every epoch); `trainers.generic.fit` trains. Only the validation day is scored: a
learning rate is a choice, and the test day is `bench.quality`'s.

Results merge into `--output` keyed by data set, model, rate and seed, so a sweep can
span several invocations.
"""

import argparse
import dataclasses
import json
import os
import platform
import time
from typing import Dict, List, Sequence

from bench import record

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "learning_rate.json")
DEFAULT_MODELS = ("keep_general", "pepnet", "mmoe", "shared_bottom", "adl", "grec")
DEFAULT_RATES = (1e-3, 3e-3)


def rate_fields(entry) -> List[str]:
    """The config fields of `entry` that are an optimizer's learning rate (from its search space)."""
    return sorted(n for n in entry.search_space() if n.endswith("learning_rate"))


def train_one(name: str, rate: float, seed: int, splits: Dict, vocab_sizes: Dict[str, int], options) -> Dict:
    """One model at one rate: {best validation click AUC, its epoch, epochs run, seconds, the curves}."""
    import tensorflow as tf

    from trainers import generic
    from trainers.epochs import epoch_steps
    from trainers.records import learning_curves, optimizer_names, seed_everything

    trainer = dataclasses.replace(options.keras_trainer_config(name), seed=seed)
    entry = trainer.model
    seed_everything(seed)
    rates = {f: rate for f in rate_fields(entry)}
    model, config = generic.build_model(entry, generic.model_overrides(trainer, rates), vocab_sizes,
                                        tf.distribute.get_strategy())
    batch, rows = config.batch_size, len(splits["train"]["click"])
    train = (tf.data.Dataset.from_tensor_slices(splits["train"]).shuffle(rows, seed=seed, reshuffle_each_iteration=True)
             .batch(batch, drop_remainder=True).repeat().prefetch(2))
    validation = tf.data.Dataset.from_tensor_slices(splits["validation"]).batch(batch).take(options.eval_steps)
    steps, epochs = epoch_steps(rows, batch, options.train_steps, trainer.epochs)
    data = generic.FitData(train=train, validation=validation, validation_steps=None, rows=rows, batch=batch,
                           steps=steps, epochs=epochs, batches=None)
    t0 = time.time()
    history = generic.fit(model, data, trainer, verbose=0)
    curves = learning_curves(history)
    scores = curves["val_auc_click"]
    best = max(range(len(scores)), key=scores.__getitem__)
    return {"model": name, "rate": rate, "seed": seed, "fields": sorted(rates), "optimizer": optimizer_names(model),
            "batch": batch,
            "best_val_auc_click": scores[best], "best_epoch": best + 1, "epochs": len(scores),
            "epoch_cap": epochs, "seconds": round(time.time() - t0, 1), "history": curves}


def key(run: Dict) -> str:
    return f"{run['data']}|{run['model']}|{run['rate']:g}|{run['seed']}"


def summary(runs: Sequence[Dict]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """{data: {model: {rate: mean best validation click AUC over the seeds}}}."""
    out: Dict[str, Dict[str, Dict[str, List[float]]]] = {}
    for r in runs:
        out.setdefault(r["data"], {}).setdefault(r["model"], {}).setdefault(f"{r['rate']:g}", []).append(
            r["best_val_auc_click"])
    return {d: {m: {rate: round(sum(v) / len(v), 4) for rate, v in by.items()} for m, by in models.items()}
            for d, models in out.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="a bench.quality base folder (its transform/)")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--rates", nargs="+", type=float, default=list(DEFAULT_RATES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=None, help="the epoch cap (default: KEEP_SAMD_EPOCHS' default)")
    parser.add_argument("--data", default=None, help="the data set's name in the results (default: the base's name)")
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args(argv)

    from bench.floor import load_splits
    from models import registry
    from pipelines.options import PipelineOptions
    from trainers.generic import all_vocab_sizes

    for name in args.models:
        if not rate_fields(registry.get(name)):
            raise SystemExit(f"{name}: its search space has no learning-rate field")
    data = args.data or os.path.basename(os.path.normpath(args.base))
    options = PipelineOptions.from_env({})
    if args.epochs is not None:
        options = dataclasses.replace(options, epochs=args.epochs)
    splits, tft_output = load_splits(args.base, ("train", "validation"))
    vocab_sizes = all_vocab_sizes(tft_output)
    previous = {}
    if os.path.exists(args.output):
        with open(args.output) as f:
            previous = json.load(f)
    runs = {key(r): r for r in previous.get("runs", [])}
    for seed in args.seeds:
        for name in args.models:
            for rate in args.rates:
                run = {"data": data, **train_one(name, rate, seed, splits, vocab_sizes, options)}
                runs[key(run)] = run
                print(f"{data} {name} rate {rate:g} seed {seed}: best validation click AUC "
                      f"{run['best_val_auc_click']:.4f} at epoch {run['best_epoch']}/{run['epochs']} "
                      f"({run['seconds']:.0f} s)", flush=True)
                ordered = sorted(runs.values(), key=lambda r: (r["data"], r["model"], r["rate"], r["seed"]))
                record.write(args.output, {
                    "what": "best validation click AUC per learning rate, by the Trainer's rule (bench/learning_rate.py)",
                    "summary": summary(ordered), "runs": ordered,
                    "rule": {"epochs": options.epochs, "patience": options.patience, "eval_steps": options.eval_steps},
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"},
                    record.command_line(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
