import dataclasses
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


# --- presets -----------------------------------------------------------------------------

RICH = G.PRESETS["rich"]
MIN_TEST_DAY_ROWS = 3000  # the quality benchmark's minimum per scenario on the test (last) day


def test_rich_preset_gives_every_scenario_3000_test_day_rows_with_a_small_margin():
    per_day = G.expected_rows_per_day(RICH)  # generate: multinomial over weights, uniform days
    smallest = min(per_day.values())
    assert smallest >= 1.15 * MIN_TEST_DAY_ROWS  # the 3,000 minimum with a 15% margin
    # ... and no more than that: the total is the smallest round figure meeting it.
    assert smallest <= 1.20 * MIN_TEST_DAY_ROWS
    # 3 sd of the binomial draw of the smallest scenario's test day still clear the minimum.
    assert smallest - 3 * smallest ** 0.5 > MIN_TEST_DAY_ROWS
    assert RICH.rows == 510_000 and RICH.days == 5 and sum(per_day.values()) * RICH.days == pytest.approx(RICH.rows)


def test_rich_preset_minor_scenarios_are_a_quarter_of_a_homogeneous_one_and_the_smallest():
    by_role = {}
    for s in RICH.scenarios:
        by_role.setdefault(s.role, []).append(s.weight)
    assert by_role["minor"] == [0.035, 0.035]
    assert max(by_role["minor"]) / min(by_role["homogeneous"]) == pytest.approx(0.25)
    assert max(by_role["minor"]) < 0.6 * min(w for r, ws in by_role.items() if r != "minor" for w in ws)
    # Everything but the minor weights is the default set.
    assert [dataclasses.replace(s, weight=0) for s in RICH.scenarios] == \
        [dataclasses.replace(s, weight=0) for s in G.DEFAULT_SCENARIOS]


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_rich_preset_users_have_hundreds_of_train_day_impressions(seed):
    """Days 0-2 train, 3 validation, 4 test: expected impressions per user on the train days."""
    cfg = dataclasses.replace(RICH, seed=seed).resolved()
    train_share = (cfg.days - 2) / cfg.days
    assert cfg.rows * train_share / cfg.users >= 300  # on average
    # Per user, from the latent world generate draws first (same rng, same order):
    # a scenario's rows go to its visitors in proportion to their activity.
    world = G._World(cfg, np.random.default_rng(cfg.seed))
    w = np.array([s.weight for s in cfg.scenarios])
    expected = np.zeros(cfg.users)
    for s, share in enumerate(w / w.sum()):
        act = world.user_activity * world.member[:, s]
        expected += cfg.rows * train_share * share * act / act.sum()
    assert np.median(expected) >= 200  # the median user too (activity is log-normal)
    assert np.mean(expected >= 100) > 0.75


def test_default_preset_users_have_enough_train_day_history_for_make_run_to_learn_from():
    """make run's data: days 0-2 train; the rich preset's scenario weights."""
    cfg = G.PRESETS["default"].resolved()
    rich = G.PRESETS["rich"].resolved()

    def train_rows(c):
        return c.rows * (c.days - 2) / c.days

    # at least as dense as the benchmark's data: as many impressions a user and an item
    assert train_rows(cfg) / cfg.users >= train_rows(rich) / rich.users
    assert train_rows(cfg) / cfg.items >= train_rows(rich) / rich.items
    assert cfg.scenarios == G.RICH_SCENARIOS
    assert G.GeneratorConfig().resolved().users == 1000  # without a preset: users scale with rows


def test_presets_are_frozen():
    with pytest.raises(TypeError):
        G.PRESETS["rich"] = G.GeneratorConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        RICH.rows = 1
    with pytest.raises(ValueError):
        G.preset_config("nope")


def test_cli_preset_parses_and_explicit_flags_override_it():
    cfg, _ = G.parse_args(["--output", "x", "--preset", "rich"])
    assert cfg == RICH
    cfg, _ = G.parse_args(["--output", "x", "--preset", "rich", "--seed", "8"])
    assert cfg == dataclasses.replace(RICH, seed=8)
    cfg, _ = G.parse_args(["--output", "x", "--preset", "rich", "--rows", "20000", "--days", "3",
                           "--users", "300", "--items", "400", "--seed", "3"])
    assert (cfg.rows, cfg.days, cfg.users, cfg.items, cfg.seed) == (20_000, 3, 300, 400, 3)
    assert cfg.scenarios == G.RICH_SCENARIOS  # what no flag names stays the preset's
    # Without --preset: the old defaults, users and items scaling with rows.
    cfg, _ = G.parse_args(["--output", "x", "--rows", "80000"])
    assert cfg == G.GeneratorConfig(rows=80_000) and cfg.resolved().users == 2000
    with pytest.raises(SystemExit):
        G.parse_args(["--output", "x", "--preset", "huge"])
    help_text = G._parser().format_help()
    assert "rich: 510,000 rows over 5 days, 1,000 users, 2,000 items" in help_text
    assert "306 impressions each on the train days" in help_text
    assert "`rich`" in G.__doc__ and "3,466" in G.__doc__


def test_rich_preset_scaled_down_splits_rows_across_days_as_expected(tmp_path):
    """The preset at 1/17 of its rows through the CLI: days and scenario shares as computed."""
    out = tmp_path / "rich_small"
    assert G.main(["--output", str(out), "--preset", "rich", "--rows", "30000", "--users", "200",
                   "--no-progress"]) == 0
    truth = json.load(open(out / "truth.json"))
    assert truth["config"]["days"] == 5 and truth["rows"] == 30_000
    assert {s["scenario_id"]: s["weight"] for s in truth["scenarios"]} == \
        {s.scenario_id: s.weight for s in G.RICH_SCENARIOS}
    rows = pd.concat([pd.read_csv(f, usecols=["scenario_id", "day"])
                      for f in sorted(glob.glob(str(out / "day=*" / "*.csv")))])
    expected = G.expected_rows_per_day(dataclasses.replace(RICH, rows=30_000))
    last = rows[rows.day == 4].scenario_id.value_counts()
    for scenario, e in expected.items():  # binomial draws: within 5 sd
        assert abs(last[scenario] - e) < 5 * e ** 0.5, (scenario, last[scenario], e)
    assert last.nsmallest(2).index.sort_values().tolist() == ["coupon_center", "flash_sale"]
    per_day = rows.day.value_counts()
    assert (abs(per_day - 6000) < 5 * 6000 ** 0.5).all()
