import json
import os
from statistics import NormalDist

import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from components.evaluation_report.report import write_report
from components.model_evaluator import metrics as M
from components.model_evaluator.blessing import BlessingConfig, Floor, decide
from components.model_evaluator.executor import check_aligned, evaluate_model, latest_version

ROLES = {"home": "super", "feed_a": "homogeneous", "feed_b": "homogeneous", "pay": "heterogeneous",
         "tiny": "minor"}


def test_gauc_weights_users_by_impressions_and_skips_single_class_users():
    users = ["a", "a", "a", "b", "b", "c", "c"]
    labels = [1, 0, 0, 1, 0, 1, 1]
    scores = [0.9, 0.2, 0.4, 0.3, 0.6, 0.1, 0.2]
    # a: AUC 1 over 3 impressions; b: AUC 0 over 2; c has clicks only and is skipped.
    assert M.gauc(users, labels, scores) == pytest.approx((3 * 1.0 + 2 * 0.0) / 5)
    # Shuffling the rows changes nothing.
    perm = np.random.default_rng(0).permutation(7)
    assert M.gauc(np.array(users)[perm], np.array(labels)[perm], np.array(scores)[perm]) == pytest.approx(0.6)
    assert M.gauc(["a", "b"], [1, 0], [0.5, 0.5]) is None  # nobody has both labels
    assert M.auc([1, 1], [0.2, 0.3]) is None


Z95 = NormalDist().inv_cdf(0.975)


def _brute_delong(labels, *scores):
    """AUCs and DeLong covariance from the explicit positive x negative comparison matrix."""
    y = np.asarray(labels) == 1
    comps = []
    for s in scores:
        s = np.asarray(s, float)
        psi = (s[y][:, None] > s[~y][None, :]) + 0.5 * (s[y][:, None] == s[~y][None, :])
        comps.append((psi.mean(1), psi.mean(0)))  # V10 per positive, V01 per negative
    v10, v01 = np.array([c[0] for c in comps]), np.array([c[1] for c in comps])
    return v10.mean(1), np.atleast_2d(np.cov(v10)) / y.sum() + np.atleast_2d(np.cov(v01)) / (~y).sum()


def test_auc_interval_is_delongs_on_a_hand_checked_case():
    # Positives 0.35, 0.8; negatives 0.1, 0.4.
    # V10 (share of negatives below each positive): 0.35 -> 1/2, 0.8 -> 1.  AUC = mean = 0.75.
    # V01 (share of positives above each negative): 0.1 -> 1, 0.4 -> 1/2.
    # S10 = var([0.5, 1], ddof=1) = 2 * 0.25**2 / 1 = 0.125; S01 = var([1, 0.5]) = 0.125.
    # var(AUC) = S10 / m + S01 / n = 0.125 / 2 + 0.125 / 2 = 0.125.
    value, low, high = M.auc_interval([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert value == pytest.approx(0.75)
    assert low == pytest.approx(0.75 - Z95 * np.sqrt(0.125))
    assert high == 1.0  # 0.75 + 0.69 clipped
    assert M.auc_interval([1, 1, 1], [0.1, 0.2, 0.3]) is None
    assert M.auc_interval([0, 0, 1], [0.1, 0.2, 0.3]) is None  # one positive: no variance


def test_auc_interval_matches_brute_force_delong_with_ties():
    rng = np.random.default_rng(1)
    y = (rng.random(400) < 0.3).astype(int)
    s = np.round(rng.random(400) + 0.4 * y, 1)  # one decimal: many ties, within and across classes
    (a,), cov = _brute_delong(y, s)
    value, low, high = M.auc_interval(y, s, level=0.9)
    assert value == pytest.approx(a) and value == pytest.approx(roc_auc_score(y, s))
    half = NormalDist().inv_cdf(0.95) * np.sqrt(cov[0, 0])
    assert (low, high) == pytest.approx((a - half, a + half))
    assert M.auc(y, s) == pytest.approx(a)


def test_auc_interval_covers_the_true_auc():
    # Binormal scores: positives N(d, 1), negatives N(0, 1); the true AUC is Phi(d / sqrt 2).
    rng = np.random.default_rng(2)
    d = 0.8
    truth = NormalDist().cdf(d / np.sqrt(2))
    hits = 0
    for _ in range(400):
        y = np.r_[np.ones(80, int), np.zeros(120, int)]
        _, low, high = M.auc_interval(y, rng.normal(size=200) + d * y)
        hits += low <= truth <= high
    assert 0.91 <= hits / 400 <= 0.985  # a variance off by 2x would cover ~0.83 or ~0.99


def test_paired_auc_difference():
    rng = np.random.default_rng(4)
    y = (rng.random(500) < 0.4).astype(int)
    a = np.round(rng.random(500) + 0.5 * y, 2)
    b = np.round(0.5 * a + 0.5 * rng.random(500), 2)  # correlated with a, weaker
    assert M.paired_auc_difference(y, a, a) == pytest.approx((0.0, 0.0, 0.0), abs=1e-12)
    (aa, ab), cov = _brute_delong(y, a, b)
    diff, low, high = M.paired_auc_difference(y, a, b)
    half = Z95 * np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert diff == pytest.approx(aa - ab) and diff > 0
    assert (low, high) == pytest.approx((diff - half, diff + half))
    assert M.paired_auc_difference(y, b, a)[0] == pytest.approx(-diff)
    # Pairing: the difference is tighter than the two AUCs' own intervals add up to.
    assert high - low < (M.auc_interval(y, a)[2] - M.auc_interval(y, a)[1]) + (
        M.auc_interval(y, b)[2] - M.auc_interval(y, b)[1])


def test_paired_auc_difference_over_seeds():
    rng = np.random.default_rng(6)
    y = (rng.random(600) < 0.4).astype(int)
    base = rng.random(600) + 0.5 * y
    pairs = [(np.round(base + 0.1 * rng.random(600), 2), np.round(0.2 * base + rng.random(600), 2))
             for _ in range(3)]
    diffs = [M.paired_auc_difference(y, a, b)[0] for a, b in pairs]
    mean, low, high = M.paired_auc_difference_over_seeds(y, pairs)
    assert mean == pytest.approx(np.mean(diffs))
    # The half-width is t_2 s / sqrt(3) from the seeds plus DeLong's for the mean contrast, brute-forced here.
    (aucs, cov) = _brute_delong(y, *[s for pair in pairs for s in pair])
    c = np.tile([1.0, -1.0], 3) / 3
    rows = Z95 * np.sqrt(c @ cov @ c)
    seeds = 4.302652729911275 * np.std(diffs, ddof=1) / np.sqrt(3)
    assert (low, high) == pytest.approx((mean - seeds - rows, mean + seeds + rows))
    # One seed far off: the seeds' spread widens the interval, so one seed cannot carry a verdict.
    wild = pairs[:2] + [(pairs[2][1], pairs[2][0])]
    assert M.paired_auc_difference_over_seeds(y, wild)[1] < 0 < M.paired_auc_difference_over_seeds(y, pairs)[1]
    assert M.paired_auc_difference_over_seeds(y, pairs[:1]) is None


def _old_gauc(users, labels, scores):
    """GAUC as it was computed before: scikit-learn per user, weighted by impressions."""
    total = weight = 0.0
    for u in np.unique(users):
        m = users == u
        if 0 < labels[m].sum() < m.sum():
            total += m.sum() * roc_auc_score(labels[m], scores[m])
            weight += m.sum()
    return total / weight


def test_gauc_interval_bootstraps_users():
    rng = np.random.default_rng(5)
    n = 3000
    users = rng.integers(0, 200, n).astype(str)
    y = (rng.random(n) < 0.3).astype(int)
    s = np.round(rng.random(n) + 0.3 * y, 1)
    value, low, high = M.gauc_interval(users, y, s)
    assert value == pytest.approx(_old_gauc(users, y, s)) and value == pytest.approx(M.gauc(users, y, s))
    assert low < value < high
    assert M.gauc_interval(users, y, s, seed=7) == M.gauc_interval(users, y, s, seed=7)
    assert M.gauc_interval(users, y, s, seed=7) != M.gauc_interval(users, y, s, seed=8)
    assert M.gauc_interval(users, y, s, level=0.5)[2] - M.gauc_interval(users, y, s, level=0.5)[1] < high - low
    assert M.gauc_interval(["a", "b"], [1, 0], [0.5, 0.5]) is None

    b = 0.5 * s + 0.5 * rng.random(n)
    diff, dlow, dhigh = M.paired_gauc_difference(users, y, s, b)
    assert diff == pytest.approx(_old_gauc(users, y, s) - _old_gauc(users, y, b)) and dlow < diff < dhigh
    assert M.paired_gauc_difference(users, y, s, s) == (0.0, 0.0, 0.0)


def test_slice_metrics_mark_small_slices():
    rng = np.random.default_rng(7)
    scen = np.array(["big"] * 400 + ["small"] * 100, dtype=object)
    click = np.r_[(rng.random(400) < 0.4), np.arange(100) < 10].astype(np.int64)  # small: 10 positives
    table = {"scenario": scen, "user": rng.integers(0, 40, 500).astype(str).astype(object), "click": click}
    pred = {"click": np.clip(0.3 + 0.2 * click + 0.3 * rng.random(500), 0, 1)}
    per = M.evaluate(table, pred, tasks=("click",))
    big, small = per["big"]["click"], per["small"]["click"]
    assert big["positives"] >= M.MIN_CLASS and big["negatives"] >= M.MIN_CLASS and big["readable"]
    assert (small["positives"], small["negatives"]) == (10, 90) and not small["readable"]
    for m in (big, small):
        assert m["auc_ci"][0] <= m["auc"] <= m["auc_ci"][1]
        assert m["gauc_ci"][0] <= m["gauc"] <= m["gauc_ci"][1]
    assert small["auc_ci"][1] - small["auc_ci"][0] > big["auc_ci"][1] - big["auc_ci"][0]


def test_group_means_follow_the_roles_of_scenarios_csv():
    per = {s: {t: {"auc": v} for t in M.TASKS} for s, v in
           (("home", 0.9), ("feed_a", 0.6), ("feed_b", 0.7), ("pay", 0.8), ("tiny", 0.55))}
    groups = M.group_means(per, ROLES)
    assert groups["homogeneous"]["click"] == pytest.approx(0.65)
    assert groups["heterogeneous"]["cart"] == pytest.approx(0.8)
    assert groups["minor"]["conversion"] == pytest.approx(0.55)
    assert "super" not in groups  # the super scenario is not one of Table 1's groups
    assert M.rela_impr(0.7, 0.6) == pytest.approx(100.0)  # (0.2 / 0.1 - 1) * 100


def test_blessing_rule():
    c = BlessingConfig(metric="auc_click", margin=0.02, tolerance=0.01)
    assert decide(c, 0.60)[0]
    blessed, why = decide(c, 0.515)
    assert not blessed and "chance" in why and "0.5150" in why
    assert not decide(c, 0.65, baseline=0.64, baseline_name="shared_bottom")[0]
    assert decide(c, 0.67, baseline=0.64)[0]
    blessed, why = decide(c, 0.65, previous=0.70)
    assert not blessed and "regresses" in why
    assert decide(c, 0.695, previous=0.70)[0]  # within the tolerance
    assert not decide(c, None)[0]
    with pytest.raises(ValueError, match="logloss_click"):
        BlessingConfig(metric="logloss_click")


def test_blessing_refuses_only_a_model_whose_paired_interval_is_entirely_below_the_floor():
    c = BlessingConfig(metric="auc_click", margin=0.01)
    below = Floor("logistic_regression", 0.648, 2345, (-0.036, -0.048, -0.024))
    blessed, why = decide(c, 0.612, floor=below)
    assert not blessed
    assert why == ("auc_click 0.612 is below the floor logistic_regression 0.648 on the same 2,345 rows: "
                   "difference -0.036 [-0.048, -0.024] (paired 95%)")
    # Below the floor's value but not surely: no difference, blessed; the reason still names the interval.
    blessed, why = decide(c, 0.640, floor=Floor("logistic_regression", 0.648, 2345, (-0.008, -0.020, 0.004)))
    assert blessed and "not below the floor logistic_regression 0.648" in why and "[-0.020, +0.004]" in why
    assert decide(c, 0.640, floor=Floor("lr", 0.640, 10, (0.0, -0.01, 0.0)))[0]  # an interval touching 0
    assert decide(c, 0.700, floor=Floor("lr", 0.648, 2345, (0.052, 0.040, 0.064)))[0]
    assert decide(c, 0.640, floor=Floor("lr", None, 30, None))[0]  # too few rows of a class to compare
    blessed, why = decide(c, 0.612, floor=Floor("logistic_regression", skipped="not trained in this run"))
    assert blessed and "floor logistic_regression not checked: not trained in this run" in why
    # The floor check is besides the others: chance's margin still refuses first.
    assert "chance" in decide(c, 0.505, floor=Floor("lr", 0.5, 9, (0.005, -0.1, 0.11)))[1]


def test_the_floor_is_blessed_whenever_its_metric_can_be_computed():
    c = BlessingConfig(metric="auc_click", margin=0.05, tolerance=0.01)
    blessed, why = decide(c, 0.52, previous=0.70, fallback=True)  # below the margin and regressing: the fallback
    assert blessed and "the floor" in why and "0.7000" in why
    assert not decide(c, None, fallback=True)[0]


# A tiny test split and SavedModels that score it: "oracle" predicts the true probability,
# "noisy" mixes it with a per-row noise column, "reversed" predicts its complement.
def _example(row):
    f = tf.train.Features(feature={
        "scenario_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[row["scenario"].encode()])),
        "user_id": tf.train.Feature(int64_list=tf.train.Int64List(value=[row["user"]])),
        **{t: tf.train.Feature(int64_list=tf.train.Int64List(value=[row[t]])) for t in M.TASKS},
        **{M.ORACLE[t]: tf.train.Feature(float_list=tf.train.FloatList(value=[row[M.ORACLE[t]]])) for t in M.TASKS},
        "noise": tf.train.Feature(float_list=tf.train.FloatList(value=[row["noise"]])),
    })
    return tf.train.Example(features=f).SerializeToString()


@pytest.fixture(scope="module")
def eval_split(tmp_path_factory):
    rng = np.random.default_rng(3)
    n = 3000
    scen = rng.choice(list(ROLES), n, p=[0.4, 0.2, 0.2, 0.15, 0.05])
    rows = []
    for i in range(n):
        p = {t: float(rng.uniform(0.02, 0.6)) for t in M.TASKS}
        click = int(rng.random() < p["click"])
        rows.append({"scenario": scen[i], "user": int(rng.integers(0, 300)), "click": click,
                     "conversion": click * int(rng.random() < p["conversion"]),
                     "cart": click * int(rng.random() < p["cart"]),
                     **{M.ORACLE[t]: p[t] for t in M.TASKS}, "noise": float(rng.random())})
    root = tmp_path_factory.mktemp("examples")
    os.makedirs(root / "Split-test")
    with tf.io.TFRecordWriter(str(root / "Split-test" / "data.gz"), options="GZIP") as w:
        for r in rows:
            w.write(_example(r))
    return M.load_examples(M.eval_files(str(root)))


class _Scorer(tf.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(self, examples):
        spec = {M.ORACLE[t]: tf.io.FixedLenFeature([], tf.float32) for t in M.TASKS}
        spec["noise"] = tf.io.FixedLenFeature([], tf.float32)
        f = tf.io.parse_example(examples, spec)
        out = {}
        for t in (("click",) if self.kind == "click_only" else M.TASKS):
            p = f[M.ORACLE[t]]
            out[t] = {"oracle": p, "click_only": p, "noisy": 0.1 * p + 0.9 * f["noise"] * 0.6, "reversed": 1.0 - p}[self.kind]
        return out


    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def route(self, examples):  # like ADL's `routing` signature: cluster 1 when noise > 0.5
        f = tf.io.parse_example(examples, {"noise": tf.io.FixedLenFeature([], tf.float32)})
        return {"cluster": tf.cast(f["noise"] > 0.5, tf.int64)}


def _save(kind, path, routing=False):
    module = _Scorer(kind)
    signatures = {"serving_default": module.serve}
    if routing:
        signatures["routing"] = module.route
    tf.saved_model.save(module, str(path), signatures=signatures)
    return str(path)


def test_evaluator_scores_blesses_and_refuses_regressions(eval_split, tmp_path):
    rows, table = eval_split
    config = BlessingConfig(metric="auc_click", margin=0.02, tolerance=0.01)
    serving = str(tmp_path / "serving")
    oracle = evaluate_model(_save("oracle", tmp_path / "oracle"), rows, table, ROLES, "m", serving, config)
    assert oracle["test_rows"] == 3000 and oracle["tasks"] == list(M.TASKS)
    for s in ["ALL", *ROLES]:
        m = oracle["metrics"][s]["click"]
        assert m["auc"] == pytest.approx(m["oracle_auc"])  # the oracle model scores the oracle AUC
        assert m["rows"] == (3000 if s == "ALL" else int((table["scenario"] == s).sum()))
    conv = oracle["metrics"]["ALL"]["conversion"]
    assert conv["rows"] == int(table["click"].sum())  # conversion is scored over clicks
    assert 0.8 < oracle["metrics"]["ALL"]["click"]["calibration"] < 1.25
    assert oracle["blessings"]["m"]["blessed"]

    reversed_ = evaluate_model(_save("reversed", tmp_path / "rev"), rows, table, ROLES, "m", serving, config)
    assert reversed_["metrics"]["ALL"]["click"]["auc"] < 0.5 and not reversed_["blessings"]["m"]["blessed"]

    # Once the oracle is served, a worse (but better than chance) model is refused.
    os.makedirs(os.path.join(serving, "m"))
    os.rename(tmp_path / "oracle", os.path.join(serving, "m", "17"))
    assert latest_version(os.path.join(serving, "m")).endswith("17")
    noisy = evaluate_model(_save("noisy", tmp_path / "noisy"), rows, table, ROLES, "m", serving, config)
    b = noisy["blessings"]["m"]
    assert noisy["metrics"]["ALL"]["click"]["auc"] > 0.52
    assert not b["blessed"] and "regresses" in b["reason"]
    assert b["previous"] == pytest.approx(oracle["metrics"]["ALL"]["click"]["auc"])
    # ...and a model named as the baseline is the bar instead of chance.
    baseline = dict(oracle, model_name="oracle")
    again = evaluate_model(_save("oracle", tmp_path / "o2"), rows, table, ROLES, "x", serving,
                           BlessingConfig(margin=0.0), baseline)
    assert again["blessings"]["x"]["blessed"] and again["baseline"] == "oracle"


def _floor(tmp_path, kind, rows, table, name="logistic_regression"):
    """A floor as the evaluator reads it (`read_floor`): a `kind` model's predictions on the split."""
    saved = {}
    record = evaluate_model(_save(kind, tmp_path / f"floor_{kind}"), rows, table, ROLES, name,
                            str(tmp_path / "serving"), BlessingConfig(margin=0.5), predictions=saved, floor_name=name)
    assert record["blessings"][name]["blessed"] and record["blessings"][name]["fallback"]  # despite the margin
    return {"model_name": name, "path": f"{kind}/predictions.npz", "predictions": saved}


def test_a_model_is_refused_below_the_floor_on_the_same_rows_and_blessed_otherwise(eval_split, tmp_path):
    rows, table = eval_split
    config, serving = BlessingConfig(metric="auc_click", margin=0.02), str(tmp_path / "serving")
    oracle, noisy = _floor(tmp_path, "oracle", rows, table), _floor(tmp_path, "noisy", rows, table)

    def judged(kind, floor, name="pepnet", c=config):
        record = evaluate_model(_save(kind, tmp_path / f"{name}_{kind}"), rows, table, ROLES, name, serving, c,
                                floor=floor)
        return record, record["blessings"][name]

    record, below = judged("noisy", oracle)
    value = record["metrics"]["ALL"]["click"]["auc"]
    assert value > 0.5 + config.margin  # it beats chance: the floor alone refuses it
    assert not below["blessed"] and below["reason"].startswith(
        f"auc_click {value:.3f} is below the floor logistic_regression {below['floor']['value']:.3f} "
        "on the same 3,000 rows: difference -")
    expected = M.paired_auc_difference(table["click"], M.clipped(noisy["predictions"]["click"]),
                                       M.clipped(oracle["predictions"]["click"]))
    assert below["floor"]["difference"] == pytest.approx(expected) and expected[2] < 0
    assert below["floor"]["value"] == pytest.approx(record["metrics"]["ALL"]["click"]["auc"] - expected[0])
    _, same = judged("oracle", oracle)  # no difference
    assert same["blessed"] and same["floor"]["difference"] == pytest.approx((0.0, 0.0, 0.0))
    _, above = judged("oracle", noisy)
    assert above["blessed"] and above["floor"]["difference"][1] > 0
    # GAUC: the paired bootstrap over users.
    _, by_users = judged("noisy", oracle, c=BlessingConfig(metric="gauc_click", margin=0.0))
    assert by_users["floor"]["difference"] == pytest.approx(M.paired_gauc_difference(
        table["user"], table["click"], M.clipped(noisy["predictions"]["click"]),
        M.clipped(oracle["predictions"]["click"])))
    _, off = judged("noisy", oracle, c=BlessingConfig(margin=0.02, floor=False))  # off for this model
    assert off["blessed"] and "floor logistic_regression not checked: off for this model" in off["reason"]
    # A floor that is not trained in this run: not compared, and the reason says so.
    skipped = evaluate_model(_save("noisy", tmp_path / "skip"), rows, table, ROLES, "pepnet", serving, config,
                             floor_name="logistic_regression")["blessings"]["pepnet"]
    assert skipped["blessed"] and "floor logistic_regression not checked: not trained in this run" in skipped["reason"]


def test_a_student_is_compared_with_the_floor_on_its_own_scenario(eval_split, tmp_path):
    rows, table = eval_split
    students = tmp_path / "students"
    _save("oracle", students / "feed_a")
    _save("noisy", students / "pay")
    floor = _floor(tmp_path, "oracle", rows, table)
    record = evaluate_model(str(students), rows, table, ROLES, "samd", str(tmp_path / "serving"),
                            BlessingConfig(margin=-1.0), floor=floor)
    pay = table["scenario"] == "pay"
    b = record["blessings"]
    assert b["samd_pay"]["floor"]["rows"] == int(pay.sum()) and not b["samd_pay"]["blessed"]
    assert b["samd_pay"]["floor"]["value"] == pytest.approx(M.auc(table["click"][pay], floor["predictions"]["click"][pay]))
    assert "below the floor" in b["samd_pay"]["reason"]
    assert b["samd_feed_a"]["blessed"] and b["samd_feed_a"]["floor"]["rows"] == int((table["scenario"] == "feed_a").sum())


def test_misaligned_floor_predictions_raise_naming_both_files(eval_split, tmp_path):
    rows, table = eval_split
    floor = _floor(tmp_path, "oracle", rows, table)
    saved = {"user": table["user"], "scenario": table["scenario"], **{f"{t}_label": table[t] for t in M.TASKS}}
    check_aligned({**floor, "predictions": saved}, table, "examples/Split-test")  # aligned: nothing raised
    order = np.random.default_rng(0).permutation(len(table["user"]))
    with pytest.raises(ValueError, match=r"floor's predictions oracle/predictions.npz and the test split "
                                         r"examples/Split-test do not align: user differs"):
        check_aligned({**floor, "predictions": {k: v[order] for k, v in saved.items()}}, table, "examples/Split-test")
    with pytest.raises(ValueError, match="2999 rows against 3000"):
        check_aligned({**floor, "predictions": {k: v[1:] for k, v in saved.items()}}, table, "examples/Split-test")


def test_students_are_scored_and_blessed_on_their_own_scenario(eval_split, tmp_path):
    rows, table = eval_split
    students = tmp_path / "students"
    _save("oracle", students / "feed_a")
    _save("reversed", students / "pay")
    _save("click_only", students / "feed_b")  # a single-task student
    record = evaluate_model(str(students), rows, table, ROLES, "samd", str(tmp_path / "serving"), BlessingConfig())
    assert set(record["metrics"]) == {"ALL", "feed_a", "feed_b", "pay"}
    assert record["metrics"]["ALL"]["click"]["rows"] == int(np.isin(table["scenario"], ["feed_a", "feed_b", "pay"]).sum())
    # Conversion is scored where a student predicts it: not on feed_b's rows.
    assert set(record["metrics"]["feed_b"]) == {"click"}
    in_ab = np.isin(table["scenario"], ["feed_a", "pay"]) & (table["click"] == 1)
    assert record["metrics"]["ALL"]["conversion"]["rows"] == int(in_ab.sum())
    assert record["blessings"]["samd_feed_a"]["blessed"] and record["blessings"]["samd_feed_a"]["slice"] == "feed_a"
    assert not record["blessings"]["samd_pay"]["blessed"]
    assert record["groups"]["auc"]["heterogeneous"]["click"] < 0.5


def test_an_unreadable_pushed_version_costs_only_its_own_students_comparison(eval_split, tmp_path):
    rows, table = eval_split
    students, serving = tmp_path / "students", tmp_path / "serving"
    _save("oracle", students / "feed_a")
    _save("oracle", students / "pay")
    _save("noisy", serving / "samd_feed_a" / "3")
    broken = serving / "samd_pay" / "4"
    _save("noisy", broken)
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    record = evaluate_model(str(students), rows, table, ROLES, "samd", str(serving), BlessingConfig())
    noisy = evaluate_model(_save("noisy", tmp_path / "noisy"), rows, table, ROLES, "n", str(tmp_path / "none"),
                           BlessingConfig())
    assert record["blessings"]["samd_feed_a"]["previous"] == pytest.approx(
        noisy["metrics"]["feed_a"]["click"]["auc"])  # scored on its own scenario's rows
    assert record["blessings"]["samd_pay"]["previous"] is None
    assert record["blessings"]["samd_pay"]["blessed"]  # judged against chance, as with no version pushed


def test_report_has_every_model_table_and_png(eval_split, tmp_path):
    rows, table = eval_split
    noise = np.array([tf.train.Example.FromString(r).features.feature["noise"].float_list.value[0] for r in rows])
    serving = str(tmp_path / "serving")
    evaluations = {name: evaluate_model(_save(kind, tmp_path / name), rows, table, ROLES, name, serving,
                                        BlessingConfig())
                   for name, kind in (("keep_general", "noisy"), ("shared_bottom", "oracle"))}
    evaluations["adl"] = evaluate_model(_save("oracle", tmp_path / "adl", routing=True), rows, table, ROLES, "adl",
                                        serving, BlessingConfig())
    counts = evaluations["adl"]["cluster_by_scenario"]
    assert set(counts) == set(ROLES) and evaluations["keep_general"]["cluster_by_scenario"] == {}
    assert counts["pay"] == [int(((table["scenario"] == "pay") & (noise <= 0.5)).sum()),
                             int(((table["scenario"] == "pay") & (noise > 0.5)).sum())]
    transfer = {"scenarios": {s: {"transfer_weights": np.full((3, 2), 0.5).tolist(),
                                  "scenario_representation": np.random.default_rng(i).normal(size=4).tolist(),
                                  "cluster_representation": np.random.default_rng(9 + i).normal(size=4).tolist()}
                              for i, s in enumerate(ROLES)}}
    files = write_report(evaluations, str(tmp_path / "report"), transfer, base="shared_bottom")
    for key in ("auc_click.png", "auc_cart.png", "samd_transfer_weights.png", "samd_representations.png",
                "adl_clusters.png"):
        with open(files[key], "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", key
    with open(files["markdown"]) as f:
        md = f.read()
    assert "| scenario | role | oracle | keep_general | shared_bottom | adl |" in md
    assert "mean homogeneous" in md and "RelaImpr vs shared_bottom" in md
    with open(files["metrics"]) as f:
        saved = json.load(f)
    assert saved["relaimpr"]["shared_bottom"]["click"] == pytest.approx(0.0)
    assert saved["relaimpr"]["keep_general"]["click"] < 0
    assert "<img src=\"auc_click.png\">" in open(files["html"]).read()


def _write_split_and_scenarios(eval_split, tmp_path):
    """ExampleGen's three splits of `eval_split` (test: its rows 1000 on) and the scenario table, in tmp_path."""
    rows, _ = eval_split
    for split, chosen in (("train", rows[:700]), ("validation", rows[700:1000]), ("test", rows[1000:])):
        os.makedirs(tmp_path / "examples" / f"Split-{split}")
        with tf.io.TFRecordWriter(str(tmp_path / "examples" / f"Split-{split}" / "data.gz"), options="GZIP") as w:
            for r in chosen:
                w.write(r)
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "scenarios.csv").write_text(
        "scenario_id,role,exposure_position,business_type,item_family\n" + "".join(
            f"{s},{r},top,feed,general\n" for s, r in ROLES.items()))


def _do(place, out, name, model, extra_inputs=None, **exec_properties):
    """Executor.Do of a ModelEvaluator on the `examples` and `scenarios` folders (placed by `place`):
    (evaluation, blessing) artifacts, written under `out`(folder name)."""
    from tfx.types import standard_artifacts
    from tfx.types.standard_component_specs import BLESSING_KEY, EVALUATION_KEY, EXAMPLES_KEY, MODEL_KEY

    from components.artifacts import ScenarioTable
    from components.keys import BLESSING_CONFIG_KEY, MODEL_NAME_KEY, SCENARIO_TABLE_KEY, SERVING_DIR_KEY
    from components.model_evaluator import executor as E
    from tests.components import artifact

    evaluation = artifact(standard_artifacts.ModelEvaluation, out(f"{name}_evaluation"))
    blessing = artifact(standard_artifacts.ModelBlessing, out(f"{name}_blessing"))
    E.Executor().Do({EXAMPLES_KEY: [artifact(standard_artifacts.Examples, place("examples"),
                                             ["train", "validation", "test"])],
                     MODEL_KEY: [artifact(standard_artifacts.Model, place(model))],
                     SCENARIO_TABLE_KEY: [artifact(ScenarioTable, place("scenarios"))], **(extra_inputs or {})},
                    {EVALUATION_KEY: [evaluation], BLESSING_KEY: [blessing]},
                    {MODEL_NAME_KEY: name, SERVING_DIR_KEY: out("serving"), BLESSING_CONFIG_KEY: "{}",
                     **exec_properties})
    return evaluation, blessing


@pytest.mark.parametrize("filesystem", ["local", "ram"])
def test_executor_scores_the_test_split_only_and_records_budget_and_predictions(eval_split, tmp_path, filesystem):
    """Executor.Do on an artifact with all three splits: only Split-test rows are scored; on ram:// too."""
    import io
    import json as _json

    from tfx.dsl.io import fileio

    from components.model_evaluator import executor as E
    from tests.components import ram_dir, to_ram

    _, table = eval_split
    _write_split_and_scenarios(eval_split, tmp_path)
    _save("oracle", tmp_path / "model" / "Format-Serving")
    (tmp_path / "model" / "training.json").write_text(_json.dumps({"examples_seen": 5120, "epochs": 2,
                                                                   "parameters": 99, "optimizer": "Adam(0.001)"}))
    place = (lambda name: to_ram(str(tmp_path / name))) if filesystem == "ram" else (lambda name: str(tmp_path / name))
    out = (lambda name: ram_dir(name)) if filesystem == "ram" else (lambda name: str(tmp_path / name))
    evaluation, blessing = _do(place, out, "m", "model")
    with fileio.open(os.path.join(evaluation.uri, E.EVALUATION_FILE)) as f:
        record = _json.loads(f.read())
    assert record["test_rows"] == 2000  # the test split's rows, none of train's or validation's
    assert record["budget"]["examples_seen"] == 5120 and record["budget"]["exported_bytes"] > 0
    assert record["roles"] == ROLES  # from the scenario table artifact
    with fileio.open(os.path.join(evaluation.uri, E.PREDICTIONS_FILE), "rb") as f:
        saved = dict(np.load(io.BytesIO(f.read())))
    np.testing.assert_array_equal(saved["click_label"], table["click"][1000:])
    np.testing.assert_allclose(saved["click"], table["p_click"][1000:], rtol=1e-6)
    assert saved["click_covered"].all()
    assert fileio.exists(os.path.join(blessing.uri, "BLESSED" if blessing.get_int_custom_property("blessed")
                                      else "NOT_BLESSED"))


def test_executor_refuses_a_planted_model_below_the_floor_and_blesses_the_floor(eval_split, tmp_path):
    """The floor's evaluation, as its evaluator wrote it, is the input of another model's evaluator."""
    import io

    from components.keys import FLOOR_EVALUATION_KEY, FLOOR_KEY
    from components.model_evaluator import executor as E
    from models import artifact_io

    _write_split_and_scenarios(eval_split, tmp_path)
    _save("oracle", tmp_path / "floor" / "Format-Serving")
    _save("noisy", tmp_path / "planted" / "Format-Serving")
    def here(name):
        return str(tmp_path / name)

    floor = {FLOOR_KEY: "logistic_regression"}
    floor_evaluation, floor_blessing = _do(here, here, "logistic_regression", "floor", **floor)
    assert floor_blessing.get_int_custom_property("blessed") == 1
    assert os.path.exists(os.path.join(floor_blessing.uri, "BLESSED"))
    _, blessing = _do(here, here, "pepnet", "planted", {FLOOR_EVALUATION_KEY: [floor_evaluation]}, **floor)
    assert blessing.get_int_custom_property("blessed") == 0
    assert os.path.exists(os.path.join(blessing.uri, "NOT_BLESSED"))
    verdict = artifact_io.read_json(os.path.join(blessing.uri, E.BLESSING_FILE))["pepnet"]
    assert "below the floor logistic_regression" in verdict["reason"] and "on the same 2,000 rows" in verdict["reason"]
    assert verdict["floor"]["difference"][2] < 0
    # The floor's predictions of other rows (here: in another order) stop the evaluator, naming both.
    path = os.path.join(floor_evaluation.uri, E.PREDICTIONS_FILE)
    saved = dict(np.load(path))
    buffer = io.BytesIO()
    np.savez(buffer, **{k: v[::-1] for k, v in saved.items()})
    artifact_io.write_bytes(path, buffer.getvalue())
    with pytest.raises(ValueError, match=f"{path} and the test split {tmp_path / 'examples' / 'Split-test'} "
                                         "do not align"):
        _do(here, here, "pepnet", "planted", {FLOOR_EVALUATION_KEY: [floor_evaluation]}, **floor)


def test_read_split_streams_columns_and_tolerates_a_feature_without_values(tmp_path):
    """A heterogeneous scenario's row holds some features with no value: the column gets "" there."""
    def example(scenario, category, click):
        f = {"scenario_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[scenario.encode()])),
             "user_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"u1"])),
             "item_id": tf.train.Feature(int64_list=tf.train.Int64List(value=[7])),
             "category_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[category.encode()] if category
                                                                           else [])),
             "click": tf.train.Feature(int64_list=tf.train.Int64List(value=[click]))}
        return tf.train.Example(features=tf.train.Features(feature=f)).SerializeToString()

    rows = [example("home", "c1", 1), example("pay", "", 0), example("home", "c2", 0)]
    path = str(tmp_path / "test.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as w:
        for r in rows:
            w.write(r)
    source, table = M.read_split([path], batch_size=2)  # two batches
    assert len(source) == 3
    assert table["scenario"].tolist() == ["home", "pay", "home"] and table["category"].tolist() == ["c1", "", "c2"]
    assert table["item"].tolist() == ["7", "7", "7"] and table["click"].tolist() == [1, 0, 0]
    assert table["conversion"].tolist() == [0, 0, 0] and "p_click" not in table
    assert [r for _, b in source.batches(2) for r in b.numpy()] == rows
