"""KEEP's downstream trainer on real transformed examples: plain, plugged, warm-started, incremental, exported."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from models import downstream_trainer, knowledge_center
from models.keep_cache import lookup_knowledge


def _run(t, data, out, steps=20, **kw):
    return downstream_trainer.run(os.path.join(t.transformed_examples, "Split-train", "*"),
                                  os.path.join(t.transformed_examples, "Split-validation", "*"), t.transform_graph,
                                  os.path.join(data, "scenarios.csv"), os.path.join(out, "Format-Serving"), out,
                                  train_steps=steps, **kw)


@pytest.fixture(scope="module")
def runs(transformed, tmp_path_factory):
    data, t = transformed
    root = tmp_path_factory.mktemp("downstream")
    cache = str(root / "gkc")
    knowledge_center.run(os.path.join(t.transformed_examples, "Split-train", "*"),
                         os.path.join(t.transformed_examples, "Split-validation", "*"), t.transform_graph,
                         os.path.join(cache, "Format-Serving"), cache, train_steps=20, version=42,
                         custom={"knowledge": {"batch_size": 128}, "epochs": 1})
    cache_dir = os.path.join(cache, "Format-Serving")
    custom = {"downstream": {"batch_size": 128}, "epochs": 1}
    plain = _run(t, data, str(root / "plain"), custom=custom)
    plugged = _run(t, data, str(root / "plugged"), custom={**custom, "spans": 1}, knowledge_dir=cache_dir,
                   knowledge_version=42, base_model_dir=str(root / "plain"))
    return data, t, root, cache_dir, plain, plugged


def test_plain_model_warm_starts_into_the_plugged_one_with_only_plugin_variables_new(runs):
    _, _, root, _, plain, plugged = runs
    for name in ("plain", "plugged"):  # each run's record and checkpoint land in its own model folder
        with open(os.path.join(str(root / name), downstream_trainer.TRAINING_FILE)) as f:
            assert json.load(f)["plugged"] == (name == "plugged")
        assert os.path.exists(os.path.join(str(root / name), "checkpoint"))
    assert not os.path.exists(os.path.join(str(root / "gkc"), downstream_trainer.TRAINING_FILE))
    assert plain["warm_start"]["restored"] == 0 and not plain["plugged"]
    assert plugged["plugged"] and plugged["knowledge_width"] == 128
    assert plugged["warm_start"]["restored"] > 0 and plugged["warm_start"]["skipped"] is None
    assert plugged["warm_start"]["new"] and all(k.startswith("model/plugin/") for k in plugged["warm_start"]["new"])


def test_incremental_run_trains_on_the_latest_span_and_sub_scenarios_only(runs):
    data, t, *_ , plain, plugged = runs
    import csv
    with open(os.path.join(data, "scenarios.csv")) as f:
        roles = {r["scenario_id"]: r["role"] for r in csv.DictReader(f)}
    assert set(plain["scenarios"]) == {s for s, r in roles.items() if r != "super"}
    assert plugged["latest_day"] == 1 and plugged["spans"] == 1  # train = days 0-1 (2 validation, 3 test)
    assert 0 < plugged["train_rows"] < plain["train_rows"] * 0.7  # one train day of two


def test_export_takes_raw_examples_and_knowledge_and_names_its_cache_version(runs):
    _, t, root, cache_dir, _, _ = runs
    import glob
    files = glob.glob(os.path.join(t.raw_examples, "Split-test", "*"))
    examples = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP").take(8)]
    from serving.client import _raw_id
    ids = {k: [_raw_id(e, k) for e in examples] for k in ("user_id", "item_id", "category_id")}
    assert all(ids["user_id"]), ids
    knowledge = lookup_knowledge(cache_dir, ids["user_id"], ids["item_id"], ids["category_id"])
    signatures = tf.saved_model.load(str(root / "plugged" / "Format-Serving")).signatures
    version = signatures["knowledge_version"](examples=tf.constant(examples))
    assert set(version["knowledge_version"].numpy().tolist()) == {b"42"}
    assert set(version["knowledge_model"].numpy().tolist()) == {b"keep_knowledge"}
    click = signatures["serving_default"](examples=tf.constant(examples), knowledge=tf.constant(knowledge))["click"]
    other = signatures["serving_default"](examples=tf.constant(examples), knowledge=tf.constant(knowledge + 1.0))["click"]
    assert click.shape == (8,) and np.all((click.numpy() > 0) & (click.numpy() < 1))
    assert not np.allclose(click.numpy(), other.numpy())  # the knowledge input is used
    plain = tf.saved_model.load(str(root / "plain" / "Format-Serving")).signatures
    assert set(plain) == {"serving_default"}
    assert set(plain["serving_default"].structured_input_signature[1]) == {"examples"}


def test_a_checkpoint_of_another_architecture_is_not_warm_started_and_the_record_says_why(runs, tmp_path):
    data, t, root, cache_dir, _, _ = runs
    record = _run(t, data, str(tmp_path), steps=2, custom={"downstream": {"hidden_units": [32, 16], "batch_size": 64},
                                                           "epochs": 1},
                  base_model_dir=str(root / "plain"))
    assert record["warm_start"]["restored"] == 0 and "another shape" in record["warm_start"]["skipped"]
    with open(os.path.join(str(tmp_path), downstream_trainer.TRAINING_FILE)) as f:
        assert json.load(f)["warm_start"]["skipped"]


def test_unknown_scenarios_are_named(runs, tmp_path):
    data, t, *_ = runs
    with pytest.raises(ValueError, match="nowhere"):
        _run(t, data, str(tmp_path), steps=1, custom={"scenarios": ["nowhere"]})


def test_training_rows_get_knowledge_as_of_the_day_before_theirs(runs):
    """Point in time: the first train day's rows have no knowledge yet; the second day's come from the first."""
    import tensorflow_transform as tft

    from models import features as F
    from models.keep_cache import knowledge_as_of
    from models.transformed_data import load_transformed, raw_ids

    data, t, root, cache_dir, *_ = runs
    tft_output = tft.TFTransformOutput(t.transform_graph)
    rows = load_transformed(os.path.join(t.transformed_examples, "Split-train", "*"), tft_output)
    daily = knowledge_center.load_daily(str(root / "gkc"))
    ids = {k: raw_ids(tft_output, k, rows[k]) for k in ("user_id", "item_id", "category_id")}
    k = knowledge_as_of(daily, "both", ids["user_id"], ids["item_id"], ids["category_id"], rows[F.DAY])
    first, second = rows[F.DAY] == 0, rows[F.DAY] == 1
    assert not k[first].any()
    assert (np.abs(k[second]).sum(axis=1) > 0).mean() > 0.5  # most day-1 users were seen on day 0
    # ...while the served cache (the train days' latest) would give a day-0 row its later history
    served = lookup_knowledge(cache_dir, ids["user_id"][first][:50].astype(bytes),
                              ids["item_id"][first][:50].astype(bytes), ids["category_id"][first][:50].astype(bytes))
    assert np.abs(served).sum() > 0
