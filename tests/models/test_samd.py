import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from models import students as S
from models.keep import KeepConfig, KeepModel
from models import export
from models.samd import (MetaFunction, PerStudentEarlyStopping, SamdConfig, SamdDistiller, ScenarioRepresentation,
                         ScenarioTable, SoftCluster, _layer_norm, layer_widths, linear_cka, pca_rows,
                         rank_neighbours, row_entropy, teacher_embedding_init, teacher_tasks)
from trainers.samd import batch_sizes, load_teacher
from tests.models.test_keep import VOCAB as KEEP_VOCAB
from tests.models.test_keep import batch as keep_batch
from tests.models.test_students import VOCAB as STUDENT_VOCAB

VOCAB = {**STUDENT_VOCAB, **KEEP_VOCAB, "scenario_id": 10, "hist_item_ids": 40, "hist_category_ids": 12}
ROWS = [
    {"scenario_id": "a", "pos": "top", "biz": "feed"},
    {"scenario_id": "b", "pos": "top", "biz": "feed"},  # same attributes as a
    {"scenario_id": "c", "pos": "bottom", "biz": "pay"},
    {"scenario_id": "d", "pos": "bottom", "biz": "feed"},  # a's depth, other attributes
]
NEIGHBOURS = {"a": ["b"], "b": ["a"], "c": ["d"], "d": ["c"]}


def features(seed=0):
    f = keep_batch(seed)
    rng = np.random.default_rng(seed)
    for n in ("pay_channel", "member_level", "device_type", "live_room_id"):
        f[n] = tf.constant(rng.integers(0, 6, 6), tf.int64)
    for n in ("coupon_amount", "watch_seconds", "user_scenario_exposures", "item_scenario_exposures"):
        f[n] = tf.constant(rng.normal(size=6), tf.float32)
    return f


def keep_teacher(tower_units=(16, 8)):
    return KeepModel(KeepConfig(tower_units=tower_units, user_embedding_dim=8, embedding_dim=4), KEEP_VOCAB)


def make(strategy="meta", neighbours=None, seed=0, **cfg):
    tf_keras.utils.set_random_seed(seed)
    table = ScenarioTable.build(ROWS, ["pos", "biz"], neighbours or NEIGHBOURS)
    teacher = keep_teacher()
    specs = {"a": S.StudentSpec("a", "dnn", S.SUPER_FEATURES, hidden_units=(8, 4)),
             "b": S.StudentSpec("b", "dnn", S.SUPER_FEATURES, hidden_units=(8, 4)),
             "c": S.StudentSpec("c", "mmoe", S.PAYMENT_FEATURES, hidden_units=(8, 4),
                                tasks=("click", "conversion", "cart")),
             "d": S.StudentSpec("d", "dnn", S.SUPER_FEATURES, hidden_units=(8, 4))}
    students = {s: S.build_student(spec, VOCAB) for s, spec in specs.items()}
    f = features()
    config = SamdConfig(strategy=strategy, **cfg)
    teacher_widths = layer_widths(teacher.teacher_layers(f, tasks=teacher_tasks(config)))
    student_widths = {s: layer_widths(m.layer_outputs(f)) for s, m in students.items()}
    d = SamdDistiller(config, teacher, students, table, teacher_widths, student_widths)
    d.compile(optimizer=tf_keras.optimizers.Adam(0.01))
    return d, teacher, students, teacher_widths, student_widths


def data(n=4):
    return tuple(features(s) for s in range(n))


def test_transfer_weights_have_shape_mg_by_mi_and_sum_to_one_over_student_layers():
    d, _, students, tw, sw = make()
    _, _, p, w = d.scenario_state()
    for i, sid in enumerate("abcd"):
        assert w[i].shape == (len(tw), len(sw[sid]) + 1)  # the default "no transfer" column
        np.testing.assert_allclose(tf.reduce_sum(w[i], -1).numpy(), 1.0, rtol=1e-6)
    literal = make(meta_objective="distill", null_transfer=False)[0].scenario_state()[3]
    assert [tuple(x.shape) for x in literal] == [(len(tw), len(sw[s])) for s in "abcd"]
    np.testing.assert_allclose(tf.reduce_sum(p, -1).numpy(), 1.0, rtol=1e-6)
    assert len(tw) == 1 + 2  # teacher_layers="click": shared bottom + the click tower's 2 hidden layers
    _, _, _, tw_all, _ = make(teacher_layers="all")
    assert len(tw_all) == 1 + 3 * 2  # every tower
    # One W_d per student depth, shared: the DNNs' (3 layers) and the MMoE's (5).
    assert sorted(d.meta.plug_ins) == [3, 5]


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
    before = d.scenario_state()[3][0].numpy()
    d.cluster.centres.assign(d.cluster.centres * 5.0 + 1.0)
    assert not np.allclose(before, d.scenario_state()[3][0].numpy())


def test_all2all_and_similarity_strategies():
    d, teacher, students, tw, sw = make("all2all")
    f = features()
    t_layers, s_layers = teacher.teacher_layers(f, tasks=("click",)), students["c"].layer_outputs(f)
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
    batches = data()
    first = float(d.train_step(batches)["loss_fd"])
    for _ in range(15):
        logs = d.train_step(batches)
    for before, v in zip(teacher_before, teacher.variables):
        np.testing.assert_array_equal(before, v.numpy())
    meta_after = d.meta.trainable_variables + d.cluster.trainable_variables + d.representation.trainable_variables
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(meta_before, meta_after))
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(student_before, students["c"].trainable_variables))
    assert float(logs["loss_fd"]) < first
    assert not any(v.name.startswith("keep") for v in d.trainable_variables)


def test_mmd_loss_and_config_checks():
    d, *_ = make(distill_loss="mmd")
    logs = d.train_step(data())
    assert np.isfinite(float(logs["loss"]))
    d, *_ = make(projection="shared")
    assert np.isfinite(float(d.train_step(data())["loss"]))
    d, *_ = make(response_weight=0.5)
    assert np.isfinite(float(d.train_step(data())["loss"]))
    with pytest.raises(ValueError, match="unknown SAMD strategy"):
        SamdConfig(strategy="magic")
    with pytest.raises(ValueError, match="unknown SamdConfig field"):
        SamdConfig.from_dict({"clusters": 3})


def test_layers_round_trip_through_get_config():
    sc = SoftCluster(4)
    assert SoftCluster.from_config(sc.get_config()).num_clusters == 4
    mf = MetaFunction(5, [3, 4], (8,), temperature=0.5)
    again = MetaFunction.from_config(mf.get_config())
    assert again.student_layers == [3, 4] and again.teacher_layers == 5 and again.temperature == 0.5


def _meta_gradients(d, batches, lookahead=False):
    with tf.GradientTape() as tape:
        _, _, _, meta_objective, _ = d._step(batches, training=True, lookahead=lookahead)
    meta = d.meta_variables()
    return meta, tape.gradient(meta_objective, meta)


@pytest.mark.parametrize("objective", ["distill", "lookahead"])
def test_every_meta_parameter_gets_a_non_zero_gradient_at_the_first_step(objective):
    d, *_ = make(meta_objective=objective, null_transfer=objective == "lookahead")
    meta, grads = _meta_gradients(d, data(), lookahead=objective == "lookahead")
    names = [v.name for v in meta]
    assert any("w_d" in n for n in names) and any("centres" in n for n in names) and any("w_exp" in n for n in names)
    for v, g in zip(meta, grads):
        assert g is not None and float(tf.reduce_max(tf.abs(g))) > 0, v.name


def test_lookahead_with_a_no_transfer_column():
    with pytest.raises(ValueError, match="null_transfer needs"):
        SamdConfig(meta_objective="distill", null_transfer=True)
    d, _, _, tw, sw = make(meta_objective="lookahead", null_transfer=True, meta_learning_rate=0.01)
    w = d.scenario_state()[3]
    assert [tuple(x.shape) for x in w] == [(len(tw), len(sw[s]) + 1) for s in "abcd"]
    before = [x.numpy() for x in w]
    batches = data()
    for _ in range(3):
        logs = d.train_step(batches)
    assert np.isfinite(float(logs["loss"]))
    after = [x.numpy() for x in d.scenario_state()[3]]
    assert all(not np.allclose(a, b) for a, b in zip(before, after))
    # The empty column adds nothing to L_fd: all weight there, no distillation.
    f = features()
    t_layers = d.teacher.teacher_layers(f, tasks=("click",))
    s_layers = d.students["a"].layer_outputs(f)
    nowhere = np.zeros((len(tw), len(sw["a"]) + 1), np.float32)
    nowhere[:, -1] = 1.0
    assert float(d.distillation_loss("a", tf.constant(nowhere), s_layers, t_layers)) == 0.0


def test_transfer_weights_follow_the_scenario_representation_after_training():
    d, *_ = make(meta_learning_rate=0.01)
    batches = data()
    for _ in range(5):
        d.train_step(batches)
    t, _, _, w = d.scenario_state()
    # a and b: equal attributes and neighbours, so equal T and, through the shared W_d, equal W_T.
    np.testing.assert_allclose(t[0].numpy(), t[1].numpy(), rtol=1e-5)
    np.testing.assert_allclose(w[0].numpy(), w[1].numpy(), rtol=1e-5)
    # d: same depth as a, different T: different W_T.
    assert not np.allclose(t[0].numpy(), t[3].numpy())
    assert float(np.abs(w[0].numpy() - w[3].numpy()).max()) > 1e-4


def test_entropy_term_keeps_transfer_weights_graded_and_is_the_meta_parameters_only_other_signal():
    batches = data()
    literal = dict(meta_objective="distill", null_transfer=False)
    # Under L_fd, without distillation and entropy the meta parameters get no gradient at all.
    d, *_ = make(distill_weight=0.0, transfer_entropy=0.0, **literal)
    assert all(g is None or float(tf.reduce_max(tf.abs(g))) == 0 for g in _meta_gradients(d, batches)[1])
    # With the entropy term alone, training moves every W_T towards uniform rows.
    d, *_ = make(distill_weight=0.0, transfer_entropy=1.0, meta_learning_rate=0.05, **literal)
    before = [float(row_entropy(w)) for w in d.scenario_state()[3]]
    for _ in range(20):
        d.train_step(batches)
    after = [float(row_entropy(w)) for w in d.scenario_state()[3]]
    assert all(a > b for a, b in zip(after, before)), (before, after)


def test_equation_10_on_a_hand_computed_case():
    d, teacher, students, tw, sw = make()
    f = features()
    t_layers = [x.numpy() for x in teacher.teacher_layers(f, tasks=("click",))]
    s_layers = [x.numpy() for x in students["a"].layer_outputs(f)]
    rng = np.random.default_rng(3)
    w = rng.dirichlet(np.ones(len(s_layers)), size=len(t_layers)).astype(np.float32)  # rows sum to 1

    def norm(x):
        return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)

    got = float(d.distillation_loss("a", tf.constant(w), [tf.constant(x) for x in s_layers],
                                    [tf.constant(x) for x in t_layers]))
    expected = 0.0
    for n, t in enumerate(t_layers):
        for m, x in enumerate(s_layers):
            kernel, bias = (v.numpy() for v in d.student_projections["a"][m][n].weights)  # Φ_mn
            expected += w[n, m] * np.mean(np.square(norm(x @ kernel + bias) - norm(t)))
    assert got == pytest.approx(expected / len(t_layers), rel=1e-4)
    np.testing.assert_allclose(_layer_norm(tf.constant(t_layers[0])).numpy(), norm(t_layers[0]), rtol=1e-4, atol=1e-5)


def test_per_student_early_stopping_restores_each_students_own_best_weights():
    _, _, students, *_ = make()
    callback = PerStudentEarlyStopping({s: students[s] for s in ("a", "b")}, patience=2)
    callback.set_model(tf_keras.Sequential())
    callback.on_train_begin()
    snapshots = {}
    for epoch, (auc_a, auc_b) in enumerate([(0.60, 0.70), (0.70, 0.65), (0.55, 0.60), (0.50, 0.50)]):
        for sid in ("a", "b"):  # every epoch moves the weights
            for v in students[sid].trainable_variables:
                v.assign(v + 1.0)
            snapshots[(sid, epoch)] = [v.numpy().copy() for v in students[sid].trainable_variables]
        callback.on_epoch_end(epoch, {"val_auc_a": auc_a, "val_auc_b": auc_b})
        if callback.model.stop_training:
            break
    assert epoch == 3  # no student improved in epochs 3 and 4 (0-based 2, 3)
    callback.on_train_end()
    assert callback.best_epochs == {"a": 2, "b": 1}
    for sid, best in (("a", 1), ("b", 0)):
        for v, w in zip(students[sid].trainable_variables, snapshots[(sid, best)]):
            np.testing.assert_array_equal(v.numpy(), w)


def test_similarity_normalisation_stops_the_busiest_scenario_being_everyones_neighbour():
    ids = ["super", "x", "y", "z"]
    m = np.array([[1000., 60., 50., 40.],
                  [60., 100., 30., 1.],
                  [50., 30., 100., 2.],
                  [40., 1., 2., 50.]])
    raw = rank_neighbours(ids, m, 1, "raw")
    assert raw["x"] == raw["y"] == raw["z"] == ["super"]
    cos = rank_neighbours(ids, m, 1, "cosine")
    assert cos["x"] == ["y"] and cos["y"] == ["x"]  # 30/100 beats 60/sqrt(1000*100)
    assert cos["z"] == ["super"]  # 40/sqrt(50000) = 0.18 beats 2/sqrt(5000) = 0.03
    # super: x 60/sqrt(1e5) = 0.190, z 40/sqrt(5e4) = 0.179, y 50/sqrt(1e5) = 0.158
    assert rank_neighbours(ids, m, 2, "cosine")["super"] == ["x", "z"]


def test_sqrt_sampling_keeps_the_total_batch_and_shrinks_the_minor_scenarios():
    rows = {"big": 90_000, "mid": 10_000, "tiny": 2_500}  # square roots 300, 100, 50
    assert batch_sizes(rows, 100, "uniform") == {"big": 100, "mid": 100, "tiny": 100}
    assert batch_sizes(rows, 100, "sqrt") == {"big": 200, "mid": 67, "tiny": 33}
    assert batch_sizes({**rows, "tiny": 100}, 100, "sqrt")["tiny"] == 32  # the floor (10/410 of 300 = 7)


def test_load_teacher_restores_every_variable_and_refuses_a_wrong_checkpoint(tmp_path):
    f = features()
    tf_keras.utils.set_random_seed(0)
    model = keep_teacher()
    model(f)
    export.save_keras_model(model, str(tmp_path / "keep"))
    again = load_teacher(str(tmp_path / "keep"), f)
    for key in ("click", "conversion", "cart"):
        np.testing.assert_allclose(again(f)[key].numpy(), model(f)[key].numpy(), rtol=1e-6)
    # The config of a deeper model over this checkpoint: its third tower layers are not in it.
    deeper = keep_teacher(tower_units=(16, 8, 8))
    deeper(f)
    export.save_keras_model(deeper, str(tmp_path / "deeper"))
    (tmp_path / "keep" / "config.json").write_text((tmp_path / "deeper" / "config.json").read_text())
    with pytest.raises(ValueError, match="keep: the teacher checkpoint does not restore"):
        load_teacher(str(tmp_path / "keep"), f)
    # The config of a narrower model: shapes disagree.
    narrower = keep_teacher(tower_units=(8, 8))
    narrower(f)
    export.save_keras_model(narrower, str(tmp_path / "narrower"))
    (tmp_path / "deeper" / "config.json").write_text((tmp_path / "narrower" / "config.json").read_text())
    with pytest.raises(ValueError, match="deeper: the teacher checkpoint does not restore"):
        load_teacher(str(tmp_path / "deeper"), f)


def test_per_scenario_batches_hold_only_their_scenarios_rows_at_their_sizes(tmp_path):
    """Streamed: the split is written once into one file per scenario, each read back with tf.data."""
    from trainers.samd import per_scenario_batches, split_by_scenario

    spec = {"scenario_id": tf.io.FixedLenFeature([1], tf.int64), "row": tf.io.FixedLenFeature([], tf.int64)}
    with tf.io.TFRecordWriter(str(tmp_path / "part.gz"), options="GZIP") as w:
        for row, scenario in enumerate([1, 2, 1, 3, 1, 2, 1]):
            w.write(tf.train.Example(features=tf.train.Features(feature={
                "scenario_id": tf.train.Feature(int64_list=tf.train.Int64List(value=[scenario])),
                "row": tf.train.Feature(int64_list=tf.train.Int64List(value=[row]))})).SerializeToString())
    indices = {"x": 1, "y": 2, "z": 3}
    shards = split_by_scenario(str(tmp_path / "*.gz"), spec, indices, str(tmp_path / "shards"), batch_size=3)
    assert {sid: n for sid, (_, n) in shards.items()} == {"x": 4, "y": 2, "z": 1}
    for batch in per_scenario_batches(shards, spec, {"x": 3, "y": 2, "z": 2}, shuffle=True).take(4):
        for idx, part in zip(indices.values(), batch):
            assert set(part["scenario_id"].numpy().reshape(-1)) == {idx}
        assert [len(part["row"]) for part in batch] == [3, 2, 2]
    # Without shuffling: the rows in file order, repeated.
    batch = next(iter(per_scenario_batches(shards, spec, 3, shuffle=False)))
    np.testing.assert_array_equal(batch[0]["row"].numpy(), [0, 2, 4])
    np.testing.assert_array_equal(batch[2]["row"].numpy(), [3, 3, 3])
    # A shuffle buffer smaller than a scenario still yields each of its rows once per pass.
    batch = next(iter(per_scenario_batches(shards, spec, 4, shuffle=True, shuffle_buffer=2)))
    assert sorted(batch[0]["row"].numpy()) == [0, 2, 4, 6]


def test_pca_rows_keeps_the_tables_geometry_in_its_principal_directions():
    line = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    np.testing.assert_allclose(np.abs(pca_rows(line, 1)[:, 0]), np.sqrt(2) * np.arange(4), atol=1e-6)
    table = np.random.default_rng(0).normal(size=(20, 4))
    full = pca_rows(table, 8)  # as wide as the table: a rotation, so every inner product survives
    assert full.shape == (20, 4)
    np.testing.assert_allclose(full @ full.T, table @ table.T, atol=1e-4)


def test_teacher_embedding_init_copies_only_the_tables_the_teacher_has_with_the_same_vocabulary():
    _, teacher, students, _, _ = make()
    odd = S.build_student(S.StudentSpec("e", "dnn", S.SUPER_FEATURES, hidden_units=(8, 4)),
                          {**VOCAB, "item_id": VOCAB["item_id"] + 1})
    odd(features())
    students = {**students, "e": odd}
    before = {s: {t: l.embeddings.numpy() for t, l in m.inputs_layer.embeddings.items()} for s, m in students.items()}
    done = teacher_embedding_init(students, teacher)
    assert set(done["a"]) == {"user_id", "item_id", "category_id", "shop_id", "user_gender", "user_age_bucket", "hour"}
    assert "item_id" not in done["e"] and "user_id" in done["e"]  # another item vocabulary: left alone
    assert "pay_channel" not in done["c"]  # the teacher has no such table
    for sid, student in students.items():
        for table, layer in student.inputs_layer.embeddings.items():
            after = layer.embeddings.numpy()
            if table not in done[sid]:
                np.testing.assert_array_equal(after, before[sid][table])
                continue
            want = pca_rows(teacher.embeddings[table].embeddings.numpy(), layer.output_dim)
            np.testing.assert_allclose(after[:, :want.shape[1]], want, rtol=1e-5, atol=1e-6)
            # A student wider than the teacher's table keeps its own values in the extra columns.
            np.testing.assert_array_equal(after[:, want.shape[1]:], before[sid][table][:, want.shape[1]:])
