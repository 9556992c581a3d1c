import filecmp
import glob
import json
import os

import numpy as np
import pandas as pd
import pytest

from components.raw_data_check import checks
from schemas import contract
from synthetic import generate as G
from synthetic import oracle


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data") / "set")
    truth = G.generate(root, G.GeneratorConfig(rows=12_000, days=3, seed=11), progress=False)
    frames = [pd.read_csv(f, keep_default_na=True) for f in sorted(glob.glob(os.path.join(root, "day=*", "*.csv")))]
    return root, truth, pd.concat(frames, ignore_index=True)


def test_same_seed_same_bytes_other_seed_other_data(tmp_path, data):
    root, _, _ = data
    again = str(tmp_path / "again")
    G.generate(again, G.GeneratorConfig(rows=12_000, days=3, seed=11), progress=False)
    for f in glob.glob(os.path.join(root, "day=*", "*.csv")) + [os.path.join(root, "scenarios.csv")]:
        assert filecmp.cmp(f, os.path.join(again, os.path.relpath(f, root)), shallow=False), f
    other = str(tmp_path / "other")
    G.generate(other, G.GeneratorConfig(rows=12_000, days=3, seed=12), progress=False)
    assert not filecmp.cmp(os.path.join(root, "day=0", "part-00000.csv"),
                           os.path.join(other, "day=0", "part-00000.csv"), shallow=False)


def test_layout_and_header_follow_the_contract(data):
    root, truth, rows = data
    assert sorted(os.listdir(root)) == ["day=0", "day=1", "day=2", "scenarios.csv", "truth.json"]
    with open(os.path.join(root, "day=0", "part-00000.csv")) as f:
        assert tuple(f.readline().strip().split(",")) == contract.RAW_COLUMNS
    assert len(rows) == truth["rows"] == 12_000
    for day in range(3):
        assert set(pd.read_csv(os.path.join(root, f"day={day}", "part-00000.csv"))["day"]) == {day}
    # The raw-data check of the pipeline accepts it.
    report = checks.check_data_root(root)
    assert report["rows"] == 12_000


def test_labels_are_nested_and_probabilities_valid(data):
    _, _, rows = data
    for col in contract.LABELS:
        assert set(rows[col].unique()) <= {0, 1}
    assert (rows.loc[rows.click == 0, ["conversion", "cart"]] == 0).all().all()
    for col in contract.ORACLE_COLUMNS:
        assert rows[col].between(0, 1).all()
    # Labels follow the true probabilities.
    assert abs(rows.click.mean() - rows.p_click.mean()) < 0.02


def test_scenario_roles_volumes_and_heterogeneous_features(data):
    root, truth, rows = data
    scen = pd.read_csv(os.path.join(root, "scenarios.csv"))
    assert list(scen.columns) == list(contract.SCENARIO_COLUMNS)
    roles = dict(zip(scen.scenario_id, scen.role))
    assert list(roles.values()).count("super") == 1 and len(roles) == 8
    counts = rows.scenario_id.value_counts()
    super_id = next(s for s, r in roles.items() if r == "super")
    assert counts[super_id] == counts.max()
    homog = np.mean([counts[s] for s, r in roles.items() if r == "homogeneous"])
    for s in (s for s, r in roles.items() if r == "minor"):
        assert 0.05 < counts[s] / homog < 0.2
    spec = {s["scenario_id"]: s for s in truth["scenarios"]}
    for s, r in roles.items():
        sub = rows[rows.scenario_id == s]
        features = set(spec[s]["features"])
        for col in ("hist_item_ids", "user_age_bucket", "item_price", "pay_channel", "live_room_id", "device_type"):
            if col in features:
                assert sub[col].notna().any(), (s, col)
            else:
                assert sub[col].isna().all(), (s, col)
        if r == "heterogeneous":
            super_features = set(spec[super_id]["features"])
            assert len(features & super_features) / len(features) < 0.5
            assert features - super_features  # features of its own


def test_histories_come_from_the_users_own_past_clicks(data):
    """hist on day d = day d-1's clicks (latest first) + hist on day d-1, cut to 20."""
    _, _, rows = data
    seq = rows[rows.scenario_id.isin(["home_feed", "guess_you_like", "banner", "search_feed",
                                      "flash_sale", "coupon_center"])]
    checked = 0
    for day in (1, 2):
        before, today = seq[seq.day == day - 1], seq[seq.day == day]
        start_before = before.groupby("user_id").hist_item_ids.first().fillna("")
        start_today = today.groupby("user_id").hist_item_ids.first().fillna("")
        for user in start_today.index.intersection(start_before.index):
            clicks = before[(before.user_id == user) & (before.click == 1)].item_id.tolist()[::-1]
            expected = (clicks + start_before[user].split())[:20]
            assert start_today[user].split() == expected, (day, user)
            checked += 1
        # Every row of a user on a day shows the same (start-of-day) history.
        assert (today.groupby("user_id").hist_item_ids.nunique(dropna=False) <= 1).all()
    assert checked > 100


def test_users_are_shared_across_scenarios_by_latent_cluster(data):
    root, truth, rows = data
    clusters = {s["scenario_id"]: s["latent_cluster"] for s in truth["scenarios"]}
    users = rows.groupby("scenario_id").user_id.apply(set)
    pairs_same, pairs_diff = [], []
    names = [s for s in users.index if s != "home_feed"]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            jacc = len(users[a] & users[b]) / len(users[a] | users[b])
            (pairs_same if clusters[a] == clusters[b] else pairs_diff).append(jacc)
    assert np.mean(pairs_same) > 1.5 * np.mean(pairs_diff)


def test_oracle_auc_is_computed_from_the_true_probabilities(data):
    root, _, rows = data
    auc = oracle.oracle_auc(oracle.read_rows(root))
    assert set(auc) == {"ALL"} | set(rows.scenario_id.unique())
    from sklearn.metrics import roc_auc_score
    assert auc["ALL"]["click"] == pytest.approx(roc_auc_score(rows.click, rows.p_click))
    clicked = rows[rows.click == 1]
    assert auc["ALL"]["cart"] == pytest.approx(roc_auc_score(clicked.cart, clicked.p_cart))
    # The data carry real signal: the best achievable AUC is far from chance.
    assert auc["ALL"]["click"] > 0.75 and auc["ALL"]["conversion"] > 0.7


def test_truth_file_and_cli(tmp_path):
    out = tmp_path / "cli"
    assert G.main(["--output", str(out), "--rows", "3000", "--days", "2", "--no-progress"]) == 0
    truth = json.load(open(out / "truth.json"))
    assert truth["rows"] == 3000 and len(truth["scenarios"]) == 8
    assert not glob.glob(str(tmp_path / "cli.tmp-*"))  # no half-written folder left behind
    with pytest.raises(SystemExit):
        G.main(["--output", str(out), "--rows", "0"])
