import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from models.keep_cache import (CacheableKnowledgeConfig, CacheableKnowledgeModel, KnowledgeCache, assemble,
                               daily_tables, knowledge_parts, latest_tables)

VOCAB = {"user_id": 30, "item_id": 40, "category_id": 12, "shop_id": 9, "user_gender": 5, "user_age_bucket": 8}
B = 24


def batch(seed=0):
    """Rows whose user-side features are a function of the user, item-side of the item (as in a log)."""
    rng = np.random.default_rng(seed)
    user = rng.integers(1, VOCAB["user_id"], B)
    item = rng.integers(1, VOCAB["item_id"], B)
    f = {"user_id": user, "item_id": item, "category_id": item % 11 + 1, "shop_id": item % 8 + 1,
         "user_gender": user % 4 + 1, "user_age_bucket": user % 7 + 1}
    f = {n: tf.constant(v, tf.int64) for n, v in f.items()}
    h = np.stack([np.random.default_rng(int(u)).integers(1, 40, 5) for u in user])
    h[:, 3:] = 0
    f["hist_item_ids"] = tf.constant(h, tf.int64)
    f["hist_category_ids"] = tf.constant(np.where(h > 0, h % 11 + 1, 0), tf.int64)
    f["item_price"] = tf.constant(np.sin(item.astype(np.float32)), tf.float32)
    click = rng.integers(0, 2, B)
    f["click"] = tf.constant(click, tf.float32)
    f["conversion"] = tf.constant(click * rng.integers(0, 2, B), tf.float32)
    f["cart"] = tf.constant(click * rng.integers(0, 2, B), tf.float32)
    # Raw ids as the GKC sees them: strings, here derived from the vocabulary ids.
    raw = {n: np.array([f"{n[0]}{v}" for v in f[n].numpy()], dtype=object) for n in ("user_id", "item_id",
                                                                                   "category_id")}
    return f, raw


def model(strategy="both", **kw):
    tf.random.set_seed(0)
    m = CacheableKnowledgeModel(CacheableKnowledgeConfig(strategy=strategy, knowledge_dim=6, tower_units=(8,),
                                                         task_units=(4,), **kw), VOCAB)
    m(batch()[0])
    return m


def test_equation_6_and_the_strategies():
    for strategy, width in (("decomposition", 3), ("degeneration", 3), ("both", 4)):
        m = model(strategy)
        f, _ = batch(1)
        parts = m.parts(f)
        out = m(f)
        assert out["knowledge"].shape == (B, width * 6) == (B, m.config.knowledge_width())
        assert ("user_category" in parts) == (strategy != "decomposition")
        if strategy == "both":  # [K_u, K_i, K_u * K_i, K_uc]
            k = out["knowledge"].numpy()
            np.testing.assert_allclose(k[:, :6], parts["user"].numpy())
            np.testing.assert_allclose(k[:, 12:18], (parts["user"] * parts["item"]).numpy(), rtol=1e-6)
            np.testing.assert_allclose(k[:, 18:], parts["user_category"].numpy())
    with pytest.raises(ValueError, match="strategy 'full'"):
        CacheableKnowledgeConfig(strategy="full")


def test_each_part_depends_on_its_own_key_only():
    m = model("both")
    f, _ = batch(2)
    other = dict(f)
    other["item_id"] = tf.reverse(f["item_id"], [0])
    other["shop_id"] = tf.reverse(f["shop_id"], [0])
    other["item_price"] = tf.reverse(f["item_price"], [0])
    a, b = m.parts(f), m.parts(other)
    np.testing.assert_array_equal(a["user"].numpy(), b["user"].numpy())  # the item changed, not the user
    np.testing.assert_array_equal(a["user_category"].numpy(), b["user_category"].numpy())  # nor the category
    assert not np.allclose(a["item"].numpy(), b["item"].numpy())
    other["category_id"] = tf.reverse(f["category_id"], [0])
    assert not np.allclose(a["user_category"].numpy(), m.parts(other)["user_category"].numpy())


def test_training_lowers_the_loss():
    m = model("both")
    m.compile(optimizer=tf_keras.optimizers.Adam(0.02))
    f, _ = batch()
    first = float(m.compute_losses(f, m(f)))
    for _ in range(40):
        logs = m.train_step(f)
    assert set(logs) == {"loss", "auc_click", "auc_conversion", "auc_cart"}
    assert float(m.compute_losses(f, m(f))) < 0.7 * first


@pytest.mark.parametrize("strategy", ["decomposition", "both"])
def test_cached_knowledge_equals_the_model_and_unseen_keys_get_the_default(strategy, tmp_path):
    m = model(strategy)
    batches = [batch(s) for s in range(3)]
    tables = latest_tables(daily_tables(m, batches))
    assert set(tables) == set(knowledge_parts(strategy)) & {"user", "item", "user_category"}
    cache = KnowledgeCache(strategy, tables, version="7")
    cache.save(str(tmp_path / "gkc"))
    served = tf.saved_model.load(str(tmp_path / "gkc")).signatures["serving_default"]
    f, raw = batches[2]  # the latest batch: its rows are the cached ones
    got = served(user_id=tf.constant(raw["user_id"].astype(bytes)), item_id=tf.constant(raw["item_id"].astype(bytes)),
                 category_id=tf.constant(raw["category_id"].astype(bytes)))
    np.testing.assert_allclose(got["knowledge"].numpy(), m(f)["knowledge"].numpy(), rtol=1e-5, atol=1e-6)
    assert got["found_user"].numpy().all() and got["found_item"].numpy().all()
    assert set(got["version"].numpy().tolist()) == {b"7"}
    # Unseen keys: zeros and found = False; a known user with an unseen item keeps K_u.
    new = served(user_id=tf.constant([b"nobody", raw["user_id"][0].encode()]),
                 item_id=tf.constant([b"nothing", b"nothing"]), category_id=tf.constant([b"c1", b"c1"]))
    k = new["knowledge"].numpy()
    assert not k[0].any() and not new["found_user"].numpy()[0] and not new["found_item"].numpy().any()
    np.testing.assert_allclose(k[1, :6], m.parts(f)["user"].numpy()[0], rtol=1e-5)
    assert not k[1, 6:].any()  # K_i, K_u * K_i (and K_uc of an unseen pair) are zero


def test_cache_input_errors():
    with pytest.raises(ValueError, match="lacks table"):
        KnowledgeCache("both", {"user": (["a"], np.ones((1, 2))), "item": (["b"], np.ones((1, 2)))})
    with pytest.raises(ValueError, match="duplicate keys"):
        KnowledgeCache("decomposition", {"user": (["a", "a"], np.ones((2, 2))), "item": (["b"], np.ones((1, 2)))})
    with pytest.raises(ValueError, match="differ in width"):
        KnowledgeCache("decomposition", {"user": (["a"], np.ones((1, 2))), "item": (["b"], np.ones((1, 3)))})


def test_cache_uses_only_stock_ops(tmp_path):
    from serving.ops_check import unsupported_ops

    KnowledgeCache("decomposition", {"user": (["a"], np.ones((1, 2))), "item": (["b"], np.ones((1, 2)))}).save(
        str(tmp_path / "gkc"))
    assert unsupported_ops(str(tmp_path / "gkc")) == set()


def test_assemble_matches_the_strategy_order():
    p = {"user": tf.constant([[1.0, 2.0]]), "item": tf.constant([[3.0, 4.0]]), "user_category": tf.constant([[5.0, 6.0]])}
    np.testing.assert_array_equal(assemble(p, "both").numpy(), [[1, 2, 3, 4, 3, 8, 5, 6]])
    np.testing.assert_array_equal(assemble(p, "degeneration").numpy(), [[1, 2, 3, 4, 5, 6]])


def _one_user_day(history, day):
    """One row of user 3 on `day`, clicking item 7, with `history` (most recent first)."""
    h = np.zeros((1, 5), np.int64)
    h[0, :len(history)] = history
    f = {"user_id": [3], "item_id": [7], "category_id": [7 % 11 + 1], "shop_id": [7 % 8 + 1], "user_gender": [4],
         "user_age_bucket": [4]}
    f = {n: tf.constant(v, tf.int64) for n, v in f.items()}
    f["hist_item_ids"] = tf.constant(h)
    f["hist_category_ids"] = tf.constant(np.where(h > 0, h % 11 + 1, 0))
    f["item_price"] = tf.constant([0.5], tf.float32)
    raw = {"user_id": np.array(["u3"], object), "item_id": np.array(["i7"], object),
           "category_id": np.array([f"c{7 % 11 + 1}"], object), "day": np.array([day])}
    return f, raw


def test_a_click_seen_only_in_a_later_days_history_never_reaches_the_row_that_made_it():
    from models.keep_cache import knowledge_as_of

    m = model("both")
    # Day 0: user 3 clicks item 7; the nightly refresh puts 7 into day 1's history.
    day0, day1 = _one_user_day([5, 9], 0), _one_user_day([7, 5, 9], 1)
    daily = daily_tables(m, [day0, day1])
    users = np.array(["u3", "u3", "u3"], object)
    items, cats = np.array(["i7"] * 3, object), np.array([day0[1]["category_id"][0]] * 3, object)
    got = knowledge_as_of(daily, "both", users, items, cats, [0, 1, 2])
    without_click = m(day0[0])["knowledge"].numpy()[0]  # parts from the history without the click
    with_click = m(day1[0])["knowledge"].numpy()[0]
    assert not np.allclose(without_click, with_click)  # the planted click changes the knowledge
    assert not got[0].any()  # day 0: nothing is known before it
    np.testing.assert_allclose(got[1], without_click, rtol=1e-5, atol=1e-6)  # day 1: as of day 0
    np.testing.assert_allclose(got[2], with_click, rtol=1e-5, atol=1e-6)  # day 2 may see it
    # The served (latest) cache holds the later history: what a day-0 row must not be trained with.
    keys, rows = latest_tables(daily)["user"]
    np.testing.assert_allclose(rows[keys.index("u3")], m.parts(day1[0])["user"].numpy()[0], rtol=1e-5)
