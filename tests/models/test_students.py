import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

from models import students as S

VOCAB = {"user_id": 20, "item_id": 30, "category_id": 9, "shop_id": 7, "user_gender": 5, "user_age_bucket": 8,
         "hour": 25, "hist_item_ids": 30, "hist_category_ids": 9, "pay_channel": 6, "member_level": 6,
         "device_type": 6, "live_room_id": 8}
B = 5


def batch():
    rng = np.random.default_rng(0)
    f = {n: tf.constant(rng.integers(0, v, B), tf.int64) for n, v in VOCAB.items()}
    f["hist_item_ids"] = tf.constant(rng.integers(0, 30, (B, 4)), tf.int64)
    f["hist_category_ids"] = tf.constant(rng.integers(0, 9, (B, 4)), tf.int64)
    for n in ("item_price", "coupon_amount", "watch_seconds"):
        f[n] = tf.constant(rng.normal(size=B), tf.float32)
    return f


@pytest.mark.parametrize("arch,tasks,layers", [("dnn", ("click",), 3), ("dcn", ("click",), 5),
                                               ("mmoe", ("click", "conversion", "cart"), 5)])
def test_architectures_expose_layers_and_tasks(arch, tasks, layers):
    spec = S.StudentSpec("s", arch, S.SUPER_FEATURES, hidden_units=(16, 8), tasks=tasks)
    student = S.build_student(spec, VOCAB)
    out = student(batch())
    assert set(out) == set(tasks) | {f"{t}_logit" for t in tasks}
    outs = student.layer_outputs(batch())
    assert len(outs) == layers and all(x.shape[0] == B for x in outs)
    if arch == "dcn":
        assert any(isinstance(l, tfrs.layers.dcn.Cross) for l in student.crosses)
    clone = type(student).from_config(student.get_config())
    assert clone.spec == spec


def test_students_read_only_their_own_features():
    spec = S.StudentSpec("payment_page", "dnn", S.PAYMENT_FEATURES)
    student = S.build_student(spec, VOCAB)
    f = batch()
    base = student(f)["click"].numpy()
    f2 = dict(f, hist_item_ids=tf.zeros_like(f["hist_item_ids"]), shop_id=tf.zeros_like(f["shop_id"]))
    np.testing.assert_array_equal(base, student(f2)["click"].numpy())
    f3 = dict(f, pay_channel=(f["pay_channel"] + 1) % 6)
    assert not np.array_equal(base, student(f3)["click"].numpy())


def test_default_specs_cover_every_scenario_and_accept_overrides():
    roles = {"home_feed": "super", "banner": "homogeneous", "payment_page": "heterogeneous",
             "new_het": "heterogeneous", "new_minor": "minor"}
    specs = S.default_student_specs(roles, {"banner": {"architecture": "dnn", "hidden_units": [8]}})
    assert set(specs) == set(roles)
    assert {s.architecture for s in specs.values()} >= {"mmoe", "dnn"}
    assert specs["banner"].architecture == "dnn" and specs["banner"].hidden_units == (8,)
    assert "pay_channel" in specs["payment_page"].features and "hist_item_ids" not in specs["payment_page"].features
    with pytest.raises(ValueError, match="unknown student architecture"):
        S.StudentSpec("x", "transformer", S.SUPER_FEATURES)
    with pytest.raises(ValueError, match="unknown scenario"):
        S.default_student_specs(roles, {"nope": {}})


def test_dot_interaction_appends_each_pair_of_embedded_fields_dot_product_once():
    names = ("user_id", "item_id", "item_price", "hist_item_ids")  # 3 embedded fields, 1 numeric
    plain = S.StudentInput(names, VOCAB, 4)
    dot = S.StudentInput(names, VOCAB, 4, dot_interaction=True)
    f = batch()
    plain(f), dot(f)
    assert [w.shape for w in plain.weights] == [w.shape for w in dot.weights]  # the products add no weight
    for a, b in zip(plain.weights, dot.weights):
        a.assign(b)  # same tables: the blocks before the products agree
    x, y = plain(f).numpy(), dot(f).numpy()
    assert x.shape == (B, 3 * 4 + 1) and y.shape == (B, 3 * 4 + 1 + 3)
    np.testing.assert_allclose(y[:, :13], x)
    user, item, hist = x[:, 0:4], x[:, 4:8], x[:, 9:13]
    want = {float(v) for v in np.round([(user * item).sum(1)[0], (user * hist).sum(1)[0], (item * hist).sum(1)[0]], 5)}
    assert {float(v) for v in np.round(y[0, 13:], 5)} == want
    assert S.StudentInput.from_config(dot.get_config()).dot_interaction
