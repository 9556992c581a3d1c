"""KEEP's downstream trainer on real transformed examples: plain, plugged, warm-started, incremental, exported."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.trainers import custom_config
from trainers import downstream as downstream_trainer, knowledge_center
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
                         custom=custom_config("knowledge_center", knowledge={"batch_size": 128}, epochs=1))
    cache_dir = os.path.join(cache, "Format-Serving")
    custom = custom_config("downstream", downstream={"batch_size": 128}, epochs=1)
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
    record = _run(t, data, str(tmp_path), steps=2, custom=custom_config(
                      "downstream", downstream={"hidden_units": [32, 16], "batch_size": 64}, epochs=1),
                  base_model_dir=str(root / "plain"))
    assert record["warm_start"]["restored"] == 0 and "another shape" in record["warm_start"]["skipped"]
    with open(os.path.join(str(tmp_path), downstream_trainer.TRAINING_FILE)) as f:
        assert json.load(f)["warm_start"]["skipped"]


def test_unknown_scenarios_are_named(runs, tmp_path):
    data, t, *_ = runs
    with pytest.raises(ValueError, match="nowhere"):
        _run(t, data, str(tmp_path), steps=1, custom=custom_config("downstream", scenarios=["nowhere"]))


def test_training_rows_get_knowledge_as_of_the_day_before_theirs(runs):
    """Point in time, as the trainer joins them: the first train day's rows have no knowledge yet,
    the second day's come from the first day, not from the cache's latest (later) entries."""
    import tensorflow_transform as tft

    from models import features as F
    from models.keep_cache import knowledge_as_of
    from trainers.transformed_data import raw_ids, transformed_index

    data, t, root, cache_dir, *_ = runs
    tft_output = tft.TFTransformOutput(t.transform_graph)
    scenarios = downstream_trainer.sub_scenarios(os.path.join(data, "scenarios.csv"))
    index = {s: transformed_index(tft_output, "scenario_id", s) for s in scenarios}
    daily = {"strategy": "both", "tables": knowledge_center.load_daily(str(root / "gkc"))}
    rows = downstream_trainer._rows(os.path.join(t.transformed_examples, "Split-train", "*"), tft_output, index,
                                    daily=daily)
    first, second = rows[F.DAY] == 0, rows[F.DAY] == 1
    assert first.any() and second.any()
    assert not rows[downstream_trainer.KNOWLEDGE][first].any()
    ids = {k: raw_ids(tft_output, k, rows[k]) for k in ("user_id", "item_id", "category_id")}
    as_of_day_0 = knowledge_as_of({p: v for p, v in daily["tables"].items()}, "both", ids["user_id"][second],
                                  ids["item_id"][second], ids["category_id"][second], np.ones(second.sum(), int))
    np.testing.assert_array_equal(rows[downstream_trainer.KNOWLEDGE][second], as_of_day_0)
    # The served cache holds day 1's entries: what day-1 rows would have seen through a plain lookup.
    served = lookup_knowledge(cache_dir, ids["user_id"][second].astype(bytes), ids["item_id"][second].astype(bytes),
                              ids["category_id"][second].astype(bytes))
    assert not np.allclose(served, rows[downstream_trainer.KNOWLEDGE][second])


def test_vocabulary_remap_follows_ids_and_keeps_absent_and_oov_rows():
    index = downstream_trainer.vocabulary_remap(["a", "b", "c"], ["c", "new", "a"], oov_buckets=2)
    # rows: 0 absent, then c, new, a, then the two OOV buckets (old rows 4 and 5)
    assert index.tolist() == [0, 3, -1, 1, 4, 5]


class _Vocabularies:
    """The one method of TFTransformOutput the warm start reads."""

    def __init__(self, vocabularies):
        self.vocabularies = vocabularies

    def vocabulary_by_name(self, name):
        return [v.encode() for v in self.vocabularies[name]]


def test_a_grown_and_reordered_vocabulary_warm_starts_each_id_from_its_old_row(tmp_path):
    from models import features as F
    from models.keep_plugin import DownstreamConfig

    config = DownstreamConfig(hidden_units=(8, 4), attention_units=(4,), embedding_dim=4)
    users_old, users_new = ["u1", "u2", "u3"], ["u3", "u9", "u1", "u2", "u8"]
    other = {n: [f"{n}{k}" for k in range(5)] for n in ("item_id", "category_id", "shop_id", "user_gender")}
    sizes = {n: len(v) + 1 + F.OOV_BUCKETS for n, v in other.items()}
    sizes.update({n: F.integer_vocab_size(n) for n in ("user_age_bucket", "hour")})
    rng = np.random.default_rng(0)

    def rows(user_rows):
        out = {n: rng.integers(0, sizes[n], 16) for n in config.id_features if n != "user_id"}
        out["user_id"] = rng.integers(0, user_rows, 16)
        out["item_price"] = rng.normal(size=16).astype(np.float32)
        for s, _ in config.sequence_features:
            out[s] = rng.integers(0, 5, (16, 20))
        out["click"] = rng.integers(0, 2, 16).astype(np.float32)
        return out

    old_rows = len(users_old) + 1 + F.OOV_BUCKETS
    base = downstream_trainer.build_model(config, {**sizes, "user_id": old_rows}, rows(old_rows))
    base_dir = tmp_path / "base"
    downstream_trainer.save_checkpoint(base, str(base_dir / downstream_trainer.CHECKPOINT))
    (base_dir / "Format-Serving" / "assets").mkdir(parents=True)
    for name, vocabulary in {**other, "user_id": users_old}.items():
        (base_dir / "Format-Serving" / "assets" / F.VOCABULARY[name]).write_text("\n".join(vocabulary) + "\n")

    new_rows = len(users_new) + 1 + F.OOV_BUCKETS
    data = rows(new_rows)
    model = downstream_trainer.build_model(config, {**sizes, "user_id": new_rows}, data)
    fresh = model.embeddings["user_id"].embeddings.numpy().copy()
    # category_id keeps its size but its order changes (a frequency-sorted vocabulary after a new day)
    categories_new = other["category_id"][::-1]
    restored, new, remapped = downstream_trainer.warm_start_across_vocabularies(
        model, str(base_dir), _Vocabularies({**{F.VOCABULARY[n]: v for n, v in other.items()},
                                              F.VOCABULARY["user_id"]: users_new,
                                              F.VOCABULARY["category_id"]: categories_new}), data)
    assert remapped == ["category_id", "user_id"] and restored and new == []
    old_c, now_c = base.embeddings["category_id"].embeddings.numpy(), model.embeddings["category_id"].embeddings.numpy()
    np.testing.assert_array_equal(now_c[1:6], old_c[1:6][::-1])  # the same ids, rows moved with them
    old, now = base.embeddings["user_id"].embeddings.numpy(), model.embeddings["user_id"].embeddings.numpy()
    np.testing.assert_array_equal(now[1], old[3])  # u3
    np.testing.assert_array_equal(now[3], old[1])  # u1
    np.testing.assert_array_equal(now[4], old[2])  # u2
    np.testing.assert_array_equal(now[2], fresh[2])  # u9 is new: its fresh row stays
    np.testing.assert_array_equal(now[0], old[0])  # absent
    np.testing.assert_array_equal(now[-F.OOV_BUCKETS:], old[-F.OOV_BUCKETS:])
    for a, b in zip(base.dense_layers, model.dense_layers):  # everything else copied as is
        np.testing.assert_array_equal(a.kernel.numpy(), b.kernel.numpy())
