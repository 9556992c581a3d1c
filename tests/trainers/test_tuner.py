"""The Tuner (trainers/tuner.py): each Keras model's search space, a search on small stand-in data, and its
best hyperparameters reaching the Trainer (trainers/generic.py's run_fn).

The data are test_distribute's stand-ins for the Transform output (no Transform run)."""

import dataclasses
import json
import os

import pytest
import tensorflow as tf

from models import registry
from models.configs import Choice, LogRange, check_search_space
from tests.trainers.test_distribute import (FakeTransformOutput, TRAIN_ROWS, feature_spec, fn_args, rows, serialized,
                                            training_record, write_data)

KERAS_MODELS = registry.names("general") + registry.names("unified")


def test_every_keras_model_has_a_search_space_holding_its_config_defaults():
    for name in KERAS_MODELS:
        entry = registry.get(name)
        space, defaults = entry.search_space(), entry.make_config({})
        assert {"learning_rate", "dense_learning_rate"} & set(space), name  # a rate (PEPNet: one per optimizer)
        assert all(isinstance(values, LogRange) for n, values in space.items() if n.endswith("learning_rate"))
        for field, values in space.items():
            assert getattr(defaults, field) in values, (name, field)
    # a default outside its range, or a field the config does not have, is refused
    config = registry.load(registry.get("mmoe").config)
    with pytest.raises(ValueError, match="default 4 is outside"):
        check_search_space(config, {"num_experts": Choice(2, 8)}, "mmoe")
    with pytest.raises(ValueError, match="'experts' is not a searchable field"):
        check_search_space(config, {"experts": Choice(2, 4)}, "mmoe")
    with pytest.raises(ValueError, match="'batch_size' is not a searchable"):
        check_search_space(config, {"batch_size": Choice(256, 512)}, "mmoe")


@pytest.mark.parametrize("name", KERAS_MODELS)
def test_sampled_values_build_a_model_that_predicts(name):
    from trainers import generic, tuner

    entry = registry.get(name)
    hp = tuner.search_space(entry)
    assert set(hp.values) == set(entry.search_space()) and hp.values == {
        n: getattr(entry.make_config({}), n) for n in hp.values}  # declared at the defaults
    values = {p.name: p.random_sample(3) for p in hp.space}
    model, config = entry.build(values, generic.all_vocab_sizes(FakeTransformOutput()))
    assert {n: getattr(config, n) for n in values} == values
    out = model(tf.io.parse_example(tf.constant(serialized(rows(8, 1))), feature_spec()))
    assert out["click"].shape == (8,)
    # a field the trainer config sets is not searched
    pinned = next(iter(values))
    assert set(tuner.search_space(entry, pinned={pinned}).values) == set(values) - {pinned}


TUNED = "shared_bottom"  # cheap, and it has a rate and a width to search
SMALL_BASELINE = {"bottom_units": [8], "tower_units": [4]}


def _custom(**extra):
    return {"model": dataclasses.asdict(registry.get(TUNED)), "config": SMALL_BASELINE, "batch_size": 32,
            "epochs": 2, "patience": 2, "seed": 5, "model_name": TUNED, **extra}


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """Two trials of TUNED on the stand-ins, run as TFX's Tuner executor runs them; what it wrote and saw."""
    from tfx.components.tuner import executor
    from tfx.types import standard_artifacts

    from trainers import generic, tuner

    root = str(tmp_path_factory.mktemp("search"))
    write_data(root)
    fits, read = [], set()
    original_fit, original_dataset = generic.fit, generic.make_dataset

    def recording_fit(model, data, trainer, callbacks=(), verbose=2):
        history = original_fit(model, data, trainer, callbacks, verbose)
        fits.append({"steps": data.steps, "epochs": data.epochs, "rows": data.rows,
                     "history": dict(history.history), "rate": float(model.optimizer.learning_rate.numpy())})
        return history

    def recording_dataset(file_pattern, *args, **kwargs):
        read.update(file_pattern)
        return original_dataset(file_pattern, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("TF_CONFIG", raising=False)
        mp.setattr(generic.tft, "TFTransformOutput", FakeTransformOutput)
        mp.setattr(generic, "fit", recording_fit)
        mp.setattr(generic, "make_dataset", recording_dataset)
        args = fn_args(root, _custom(max_trials=2))
        args.working_dir = os.path.join(root, "tuner")
        result = tuner.tuner_fn(args)
        result.tuner.search(**result.fit_kwargs)
        outputs = {}
        for key, artifact_type in (("best_hyperparameters", standard_artifacts.HyperParameters),
                                   ("tuner_results", standard_artifacts.TunerResults)):
            artifact = artifact_type()
            artifact.uri = os.path.join(root, key)
            tf.io.gfile.makedirs(artifact.uri)
            outputs[key] = [artifact]
        executor.write_best_hyperparameters(result.tuner, outputs)
    with open(os.path.join(root, "best_hyperparameters", "best_hyperparameters.txt")) as f:
        best = json.load(f)
    return {"root": root, "tuner": result.tuner, "fits": fits, "read": read, "best": best, "args": args}


def test_the_tuner_trains_each_trial_by_the_trainers_rule_and_keeps_the_best(search):
    trials = sorted(search["tuner"].oracle.trials.values(), key=lambda t: t.trial_id)
    assert [t.status for t in trials] == ["COMPLETED"] * 2
    first, second = (t.hyperparameters.values for t in trials)
    defaults = registry.get(TUNED).make_config({})
    assert first == {"learning_rate": defaults.learning_rate, "embedding_dim": defaults.embedding_dim}  # defaults first
    assert second != first and set(second) == set(first)  # batch and the configured layers are not searched
    # every trial: a pass over the train rows an epoch, at most `epochs`; scored by its best validation epoch
    assert len(search["fits"]) == 2
    for trial, fit in zip(trials, search["fits"]):
        assert (fit["rows"], fit["steps"]) == (TRAIN_ROWS, TRAIN_ROWS // 32) and len(fit["history"]["loss"]) <= 2
        assert trial.score == pytest.approx(max(fit["history"]["val_auc_click"]))
        assert fit["rate"] == pytest.approx(trial.hyperparameters.values["learning_rate"])
    assert trials[0].score != trials[1].score
    winner = max(trials, key=lambda t: t.score)
    assert search["best"]["values"] == winner.hyperparameters.values
    # training on the train split, validating on the eval split: nothing else is read
    assert search["read"] == set(search["args"].train_files) | set(search["args"].eval_files)


def test_the_tuners_hyperparameters_reach_the_trainer(search, tmp_path, monkeypatch):
    """run_fn with the best_hyperparameters TFX wrote: they override the trainer config's fields."""
    from trainers import generic

    best = search["best"]["values"]
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setattr(generic.tft, "TFTransformOutput", FakeTransformOutput)
    built = []
    original = generic.build_model

    def recording(*a, **kw):
        built.append(original(*a, **kw))
        return built[-1]

    monkeypatch.setattr(generic, "build_model", recording)
    root = str(tmp_path)
    write_data(root)
    # the trainer config sets other values of the tuned fields: the Tuner's win
    args = fn_args(root, _custom(config={**SMALL_BASELINE, "learning_rate": 0.05, "embedding_dim": 4}, epochs=1))
    args.hyperparameters = search["best"]
    generic.run_fn(args)
    (model, config), = built
    assert (config.learning_rate, config.embedding_dim) == (best["learning_rate"], best["embedding_dim"])
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(best["learning_rate"])
    widths = {v.shape[-1] for v in model.trainable_variables if "embedding" in v.name}
    assert widths == {best["embedding_dim"]}
    record = training_record(root)
    assert record["hyperparameters"] == best
    assert record["optimizer"] == f"Adam({best['learning_rate']:g})"


def test_without_a_tuner_the_trainer_records_no_hyperparameters(tmp_path):
    from trainers.generic import tuned_values

    assert tuned_values(None) == {}
    import keras_tuner as kt

    hp = kt.HyperParameters()
    hp.Choice("embedding_dim", [8, 16], default=16)
    hp.values["embedding_dim"] = 8
    assert tuned_values(hp.get_config()) == {"embedding_dim": 8}


def test_the_docs_name_what_each_model_searches():
    import re

    docs = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs",
                        "models.md")
    text = open(docs, encoding="utf-8").read()
    section = text[text.index("## Tuning"):text.index("## Adding a model")]
    listed = {m.group(1): set(re.findall(r"`(\w+)`", m.group(2)))
              for m in re.finditer(r"^- `(\w+)`: (.*?)(?=^- |^\n)", section, re.M | re.S)}
    assert set(listed) == set(KERAS_MODELS)
    for name, fields in listed.items():
        assert fields == set(registry.get(name).search_space()), name
