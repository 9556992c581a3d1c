import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from models import students as S
from models.keep import KeepConfig, KeepModel
from models.samd import (MetaFunction, SamdConfig, SamdDistiller, ScenarioRepresentation, ScenarioTable,
                         SoftCluster, layer_widths, linear_cka)
from tests.models.test_keep import VOCAB as KEEP_VOCAB
from tests.models.test_keep import batch as keep_batch
from tests.models.test_students import VOCAB as STUDENT_VOCAB

VOCAB = {**STUDENT_VOCAB, **KEEP_VOCAB, "scenario_id": 10, "hist_item_ids": 40, "hist_category_ids": 12}
ROWS = [
    {"scenario_id": "a", "pos": "top", "biz": "feed"},
    {"scenario_id": "b", "pos": "top", "biz": "feed"},  # same attributes as a
    {"scenario_id": "c", "pos": "bottom", "biz": "pay"},
]


def features(seed=0):
    f = keep_batch(seed)
    rng = np.random.default_rng(seed)
    for n in ("pay_channel", "member_level", "device_type", "live_room_id"):
        f[n] = tf.constant(rng.integers(0, 6, 6), tf.int64)
    for n in ("coupon_amount", "watch_seconds", "user_scenario_exposures", "item_scenario_exposures"):
        f[n] = tf.constant(rng.normal(size=6), tf.float32)
    return f


def make(strategy="meta", neighbours=None, **cfg):
    table = ScenarioTable.build(ROWS, ["pos", "biz"], neighbours or {"a": ["b"], "b": ["a"], "c": ["a"]})
    teacher = KeepModel(KeepConfig(tower_units=(16, 8), user_embedding_dim=8, embedding_dim=4), KEEP_VOCAB)
    specs = {"a": S.StudentSpec("a", "dnn", S.SUPER_FEATURES, hidden_units=(8, 4)),
             "b": S.StudentSpec("b", "dnn", S.SUPER_FEATURES, hidden_units=(8, 4)),
             "c": S.StudentSpec("c", "mmoe", S.PAYMENT_FEATURES, hidden_units=(8, 4),
                                tasks=("click", "conversion", "cart"))}
    students = {s: S.build_student(spec, VOCAB) for s, spec in specs.items()}
    f = features()
    teacher_widths = layer_widths(teacher.teacher_layers(f))
    student_widths = {s: layer_widths(m.layer_outputs(f)) for s, m in students.items()}
    d = SamdDistiller(SamdConfig(strategy=strategy, **cfg), teacher, students, table, teacher_widths, student_widths)
    d.compile(optimizer=tf_keras.optimizers.Adam(0.01))
    return d, teacher, students, teacher_widths, student_widths


def test_transfer_weights_have_shape_mg_by_mi_and_sum_to_one_over_student_layers():
    d, _, students, tw, sw = make()
    _, _, p, w = d.scenario_state()
    for i, sid in enumerate("abc"):
        assert w[i].shape == (len(tw), len(sw[sid]))
        np.testing.assert_allclose(tf.reduce_sum(w[i], -1).numpy(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(tf.reduce_sum(p, -1).numpy(), 1.0, rtol=1e-6)
    assert len(tw) == 1 + 3 * 2  # shared bottom + 3 towers x 2 hidden layers


def test_identical_scenarios_get_identical_representations_and_strategies():
    d, *_ = make()
    t, c, p, w = d.scenario_state()
    np.testing.assert_allclose(t[0].numpy(), t[1].numpy())  # a and b: same attributes, same neighbours
    np.testing.assert_allclose(c[0].numpy(), c[1].numpy())
    np.testing.assert_allclose(w[0].numpy(), w[1].numpy())
    assert not np.allclose(t[0].numpy(), t[2].numpy())


def test_ablation_switches_change_what_they_should():
    table = ScenarioTable.build(ROWS, ["pos", "biz"], {"a": ["c"], "b": ["a"], "c": ["a"]})
    tf.random.set_seed(1)
    rep = ScenarioRepresentation(table.attributes, table.attribute_sizes, table.top_g)
    t = rep(None).numpy()
    assert not np.allclose(t[0], t[1])  # same attributes, different neighbours: implicit view differs
    no_imp = ScenarioRepresentation(table.attributes, table.attribute_sizes, table.top_g, implicit=False)(None).numpy()
    np.testing.assert_allclose(no_imp[0], no_imp[1])  # without the implicit view they coincide
    no_exp = ScenarioRepresentation(table.attributes, table.attribute_sizes, table.top_g, explicit=False,
                                    implicit=False)(None).numpy()
    assert not np.allclose(no_exp[0], no_exp[1])  # free per-scenario embedding instead of attributes

    d, *_ = make("no_cluster")
    before = [w.numpy() for w in d.scenario_state()[3]]
    d.cluster.centres.assign(d.cluster.centres * 5.0 + 1.0)
    after = [w.numpy() for w in d.scenario_state()[3]]
    for x, y in zip(before, after):
        np.testing.assert_allclose(x, y)  # C_i is not an input of g
    d, *_ = make("meta")
    d.meta.plug_ins[0].assign(tf.random.normal(d.meta.plug_ins[0].shape))
    before = d.scenario_state()[3][0].numpy()
    d.cluster.centres.assign(d.cluster.centres * 5.0 + 1.0)
    assert not np.allclose(before, d.scenario_state()[3][0].numpy())


def test_all2all_and_similarity_strategies():
    d, teacher, students, tw, sw = make("all2all")
    f = features()
    t_layers, s_layers = teacher.teacher_layers(f), students["c"].layer_outputs(f)
    w = d._weights(2, None, s_layers, t_layers)
    np.testing.assert_allclose(w.numpy(), 1.0 / len(sw["c"]))
    d, *_ = make("similarity")
    w = d._weights(2, None, s_layers, t_layers).numpy()
    cka = np.array([[float(linear_cka(s, t)) for s in s_layers] for t in t_layers])
    np.testing.assert_allclose(w, cka / cka.sum(-1, keepdims=True), rtol=1e-5)
    assert float(linear_cka(t_layers[0], t_layers[0])) == pytest.approx(1.0, rel=1e-5)


def test_distillation_keeps_the_teacher_frozen_and_trains_students_and_meta():
    d, teacher, students, *_ = make(distill_weight=1.0)
    teacher_before = [v.numpy().copy() for v in teacher.variables]
    meta_before = [v.numpy().copy() for v in d.meta.trainable_variables + d.cluster.trainable_variables
                   + d.representation.trainable_variables]
    student_before = [v.numpy().copy() for v in students["c"].trainable_variables]
    data = tuple(features(s) for s in range(3))
    first = float(d.train_step(data)["loss_fd"])
    for _ in range(15):
        logs = d.train_step(data)
    for before, v in zip(teacher_before, teacher.variables):
        np.testing.assert_array_equal(before, v.numpy())
    meta_after = d.meta.trainable_variables + d.cluster.trainable_variables + d.representation.trainable_variables
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(meta_before, meta_after))
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(student_before, students["c"].trainable_variables))
    assert float(logs["loss_fd"]) < first
    assert not any(v.name.startswith("keep") for v in d.trainable_variables)


def test_mmd_loss_and_config_checks():
    d, *_ = make(distill_loss="mmd")
    logs = d.train_step(tuple(features(s) for s in range(3)))
    assert np.isfinite(float(logs["loss"]))
    with pytest.raises(ValueError, match="unknown SAMD strategy"):
        SamdConfig(strategy="magic")
    with pytest.raises(ValueError, match="unknown SamdConfig field"):
        SamdConfig.from_dict({"clusters": 3})


def test_layers_round_trip_through_get_config():
    sc = SoftCluster(4)
    assert SoftCluster.from_config(sc.get_config()).num_clusters == 4
    mf = MetaFunction(5, [3, 4], (8,))
    again = MetaFunction.from_config(mf.get_config())
    assert again.student_layers == [3, 4] and again.teacher_layers == 5
