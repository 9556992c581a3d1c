"""Synthetic impression logs with ground truth, in the raw data contract of `schemas/`.

Generative process (every draw comes from one `numpy.random.Generator(seed)`, so a
seed fixes the data set byte for byte):

* Categories have latent vectors m_c; an item's vector is v_i = m_{c(i)} + noise, so
  items of a category are alike. Items have a Zipf popularity, a shop (with a quality
  bias), and a log-normal price whose level depends on the category. Every category
  belongs to one item family (fashion, electronics, grocery); a scenario whose
  `item_family` is not `general` only shows items of its family.
* Users have a latent vector u (partly shared with users of the same age bucket and
  gender, partly their own), a profile (age bucket, gender, member level), an
  activity level (log-normal) and a home cluster h_u among K latent scenario clusters.
* Scenarios (default 8, see `DEFAULT_SCENARIOS`) belong to latent clusters; scenario s
  mixes user and item through R_s = R_{k(s)} + small noise, so scenarios of one cluster
  judge items alike. A user visits the super scenario almost surely and the scenarios
  of their home cluster far more often than others, so user co-occurrence between
  scenarios carries the cluster structure (what SAMD's implicit similarity reads).
  Static attributes in `scenarios.csv` correlate with the cluster but do not name it.
* Roles: one `super` scenario with most rows; `homogeneous` ones with the super
  scenario's features; `heterogeneous` ones that drop most of them (feature overlap
  with the super scenario below 50%), carry features of their own and click for their
  own reasons (coupons, membership, watch time, device; no behaviour-sequence effect);
  `minor` ones with a tenth of a homogeneous scenario's data (a quarter in the `rich`
  preset, see below).
* Behaviour sequences come from the user's own past: a pre-period history of items
  drawn by the user's affinity, then every click of day d is prepended (most recent
  first) before day d+1 is generated. Histories refresh daily, as feature pipelines
  that snapshot nightly do; a row never sees a click from its own day.
* Labels: p_click = sigmoid(b_s + 1.5 u^T R_s v_i + shop bias + profile-category effect
  + 0.9 [the item's category is among the user's 5 latest clicked categories]
  + scenario-specific terms). Conversion and add-to-cart are drawn only for clicks,
  with their own item vectors: P(conversion | click) and P(cart | click). The true
  probabilities are written as `p_click`, `p_conversion`, `p_cart` (conditional on a
  click for the last two), so the oracle AUC is computable.
* Impressions: a scenario's row count is a multinomial draw over the scenario weights;
  each row's day is uniform over the days (so every day expects rows / days rows), its
  user is a visitor of the scenario drawn by activity, its item drawn by popularity.

Presets (`PRESETS`, `--preset NAME`; flags given explicitly override the preset):

* `default` (what `make run` trains on): 120,000 rows over 5 days, 200 users, 400 items,
  the rich preset's scenario weights: 360 impressions a user and 180 an item on the three
  train days, at least the rich preset's, so users' tastes are learnable at a size `make
  run` trains in minutes (at half the rows, no model led a fitted floor by more than the
  test day's interval). Without a preset
  (`GeneratorConfig()`), users and items scale with rows (rows // 40, at least 500): about
  40 impressions a user, where little beyond popularity is learnable (the tests' data).
* `rich`: a quality benchmark that must tell recommendation methods apart. 510,000
  rows over 5 days, 1,000 users, 2,000 items, minor scenarios at a quarter of a
  homogeneous one (weight 0.035 against 0.14; the heterogeneous ones have 0.07, so the
  minor ones stay clearly the smallest). Meant for a split by day: days 0-2 train,
  day 3 validation, day 4 test. Expected rows on the test day: every scenario at least
  3,466 (the minor ones; 3,000 needed plus a 15% margin; home_feed 39,612, homogeneous
  13,864, heterogeneous 6,932), 102,000 in all. Impressions per user over the three
  train days: 306 on average, about 215 for the median user (activity is log-normal),
  510 over all days (1,000 users rather than 2,000: at this total, 2,000 would have
  153 train impressions each, 107 for the median user). `rows` is the smallest round figure meeting the minimum with
  margin: 3,000 x 1.15 x 5 days x 1.03 (weight sum) / 0.035 = 507,643 -> 510,000.
  `--seed` draws other data sets of the same shape (a benchmark's data seeds).

Usage:
    python -m synthetic.generate --output data/default --seed 7
    python -m synthetic.generate --preset rich --output data/rich --seed 7
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import math
import os
import shutil
import sys
import time
import types
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from schemas import contract

_SUPER_FEATURES = (
    "user_id", "item_id", "category_id", "shop_id", "hist_item_ids", "hist_category_ids",
    "user_age_bucket", "user_gender", "item_price", "hour",
)


@dataclasses.dataclass(frozen=True)
class Scenario:
    scenario_id: str
    role: str
    exposure_position: str
    business_type: str
    item_family: str
    cluster: int  # latent; written to truth.json, never to scenarios.csv
    weight: float  # share of rows before normalisation
    features: Sequence[str] = _SUPER_FEATURES
    ctr_bias: float = -2.2


_PAYMENT_FEATURES = ("user_id", "item_id", "category_id", "pay_channel", "coupon_amount", "member_level", "device_type")
_LIVE_FEATURES = ("user_id", "item_id", "shop_id", "live_room_id", "watch_seconds", "member_level", "device_type")

DEFAULT_SCENARIOS = (
    Scenario("home_feed", "super", "top", "feed", "general", 0, 0.40),
    Scenario("guess_you_like", "homogeneous", "middle", "feed", "general", 0, 0.14, ctr_bias=-2.0),
    Scenario("banner", "homogeneous", "top", "ads", "fashion", 1, 0.14, ctr_bias=-2.6),
    Scenario("search_feed", "homogeneous", "middle", "search", "electronics", 1, 0.14, ctr_bias=-1.8),
    Scenario("payment_page", "heterogeneous", "bottom", "transaction", "grocery", 2, 0.07, _PAYMENT_FEATURES, -2.4),
    Scenario("live_stream", "heterogeneous", "popup", "live", "fashion", 2, 0.07, _LIVE_FEATURES, -2.0),
    Scenario("flash_sale", "minor", "popup", "ads", "electronics", 1, 0.014, ctr_bias=-2.2),
    Scenario("coupon_center", "minor", "bottom", "transaction", "grocery", 2, 0.014, ctr_bias=-2.2),
)
_FAMILIES = ("fashion", "electronics", "grocery")
_GENDERS = np.array(["F", "M", "U"])
_PAY_CHANNELS = np.array(["card", "wallet", "credit", "points"])
_DEVICES = np.array(["ios", "android", "web", "mini_program"])


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    rows: int = 40_000
    days: int = 4
    users: Optional[int] = None  # default: scales with rows
    items: Optional[int] = None
    categories: int = 60
    shops: Optional[int] = None
    latent_dim: int = 8
    clusters: int = 3
    hist_len: int = 20
    seed: int = 7
    rows_per_file: int = 1_000_000
    scenarios: Sequence[Scenario] = DEFAULT_SCENARIOS

    def resolved(self) -> "GeneratorConfig":
        users = self.users or max(500, self.rows // 40)
        items = self.items or max(500, self.rows // 40)
        shops = self.shops or max(100, items // 8)
        return dataclasses.replace(self, users=users, items=items, shops=shops)


def expected_rows_per_day(cfg: GeneratorConfig) -> Dict[str, float]:
    """{scenario_id: expected rows on any one day}: rows x weight share / days.

    `generate` draws each scenario's rows as a multinomial over the weights and each
    row's day uniformly, so this holds for every day, the last (test) day included.
    """
    total = sum(s.weight for s in cfg.scenarios)
    return {s.scenario_id: cfg.rows * s.weight / total / cfg.days for s in cfg.scenarios}


# The `rich` preset's scenarios: the default ones with the minor scenarios at a quarter
# of a homogeneous scenario (0.035 against 0.14) instead of a tenth, so that their test
# day reaches 3,000 rows at the smallest total; still half a heterogeneous one (0.07).
RICH_SCENARIOS = tuple(
    dataclasses.replace(s, weight=0.035) if s.role == "minor" else s for s in DEFAULT_SCENARIOS
)

# Named, frozen configurations; `--preset NAME` picks one and explicit flags override it.
# The module docstring documents them (what for, sizes, impressions per user).
PRESETS: Mapping[str, GeneratorConfig] = types.MappingProxyType({
    # make run's data: users with a few hundred impressions, as the product is for (at 40
    # impressions a user, little beyond popularity was learnable and the floor won); 5 days
    # (train 0-2) and the rich preset's minor weights (~800 test-day rows each, not ~340).
    # 120,000 x 3/5 / 200 = 360 impressions a user on the train days, / 400 = 180 an item.
    "default": GeneratorConfig(rows=120_000, days=5, users=200, items=400, scenarios=RICH_SCENARIOS),
    # 3,000 x 1.15 x 5 days x 1.03 / 0.035 = 507,643 -> 510,000 rows: >= 3,466 expected
    # rows per scenario on the test day; 1,000 users -> 306 impressions a user on the
    # 3 train days (rows x 3/5 / users).
    "rich": GeneratorConfig(rows=510_000, days=5, users=1_000, items=2_000, scenarios=RICH_SCENARIOS),
})


def preset_config(name: str = "default", **overrides) -> GeneratorConfig:
    """The preset `name` with the given fields replaced (None values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


def feature_overlap(scenario: Scenario, super_scenario: Scenario) -> float:
    """Share of a scenario's features that the super scenario also has."""
    own = set(scenario.features)
    return len(own & set(super_scenario.features)) / len(own)


def _draw(rng: np.random.Generator, p: np.ndarray, size) -> np.ndarray:
    """Like rng.choice(len(p), size, p=p), several times faster on large p.

    Inverse CDF with a guide table: each query starts at the first index whose CDF
    passes its table cell and walks forward the few steps left.
    """
    cdf = np.cumsum(p, dtype=np.float64)
    cdf /= cdf[-1]
    m = len(cdf)
    guide = np.minimum(np.searchsorted(cdf, np.arange(m) / m, side="right"), m - 1)
    q = rng.random(int(np.prod(size)))
    idx = guide[(q * m).astype(np.int64)]
    active = np.flatnonzero((cdf[idx] <= q) & (idx < m - 1))
    while active.size:
        idx[active] += 1
        active = active[(cdf[idx[active]] <= q[active]) & (idx[active] < m - 1)]
    return idx.reshape(size)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class _World:
    """Latent users, items and scenarios drawn once per data set."""

    def __init__(self, cfg: GeneratorConfig, rng: np.random.Generator):
        d, K = cfg.latent_dim, cfg.clusters
        U, I, C, SH = cfg.users, cfg.items, cfg.categories, cfg.shops
        scale = d ** -0.25
        self.cat_family = np.arange(C) % len(_FAMILIES)
        cat_vec = rng.normal(size=(C, d))
        self.item_cat = rng.integers(0, C, I)
        self.item_vec = (cat_vec[self.item_cat] + 0.6 * rng.normal(size=(I, d))) * scale / 1.17
        self.item_cv_vec = (self.item_vec + 0.5 * scale * rng.normal(size=(I, d))).astype(np.float32)
        self.item_cart_vec = (self.item_vec + 0.5 * scale * rng.normal(size=(I, d))).astype(np.float32)
        self.item_vec = self.item_vec.astype(np.float32)
        pop = 1.0 / (np.arange(I) + 10.0) ** 0.9
        self.item_pop = rng.permutation(pop / pop.sum())
        self.item_shop = rng.integers(0, SH, I)
        self.shop_bias = rng.normal(0, 0.3, SH)
        cat_price = rng.normal(3.0, 0.8, C)
        self.item_price = np.round(np.exp(rng.normal(cat_price[self.item_cat], 0.4)), 2)
        self.log_price_z = (np.log(self.item_price) - 3.0) / 0.9

        self.user_home = rng.integers(0, K, U)
        self.user_age = rng.integers(0, 7, U)
        self.user_gender = rng.choice(3, U, p=[0.48, 0.48, 0.04])
        # Taste is partly shared by profile (age, gender), partly the user's own.
        profile = rng.normal(size=(7, d))[self.user_age] + 0.7 * rng.normal(size=(3, d))[self.user_gender]
        self.user_vec = ((0.55 * profile + 0.75 * rng.normal(size=(U, d))) * scale).astype(np.float32)
        self.user_member = rng.choice(5, U, p=[0.4, 0.3, 0.15, 0.1, 0.05])
        self.user_activity = rng.lognormal(0.0, 0.8, U)
        self.age_cat = rng.normal(0, 0.35, (7, C))

        eye = np.eye(d)
        cluster_R = [eye + 0.8 * rng.normal(size=(d, d)) / math.sqrt(d) for _ in range(K)]
        self.scen_R = np.stack(
            [cluster_R[s.cluster] + 0.2 * rng.normal(size=(d, d)) / math.sqrt(d) for s in cfg.scenarios]
        ).astype(np.float32)
        # Visits: the home cluster's scenarios far more often than the others.
        S = len(cfg.scenarios)
        visit_p = np.empty((U, S))
        for s, sc in enumerate(cfg.scenarios):
            same = self.user_home == sc.cluster
            if sc.role == "super":
                visit_p[:, s] = 0.95
            elif sc.role == "minor":
                visit_p[:, s] = np.where(same, 0.35, 0.04)
            else:
                visit_p[:, s] = np.where(same, 0.7, 0.1)
        self.member = rng.random((U, S)) < visit_p
        for s in range(S):  # every scenario has visitors, however small the data set
            if self.member[:, s].sum() < 10:
                self.member[rng.choice(U, 10, replace=False), s] = True

    def affinity(self, users, items, R) -> np.ndarray:
        return np.einsum("nd,nd->n", self.user_vec[users] @ R, self.item_vec[items])


def _initial_histories(world: _World, cfg: GeneratorConfig, rng) -> np.ndarray:
    """Pre-period click histories, [users, hist_len], -1 padded, most recent first."""
    U, H = cfg.users, cfg.hist_len
    hist = np.full((U, H), -1, dtype=np.int64)
    lengths = rng.integers(0, H + 1, U)
    lengths[rng.random(U) < 0.1] = 0  # some users come with no history at all
    R = world.scen_R[0]
    n_cand = 2 * H
    for start in range(0, U, 50_000):
        users = np.arange(start, min(U, start + 50_000))
        cand = _draw(rng, world.item_pop, (len(users), n_cand))
        uR = world.user_vec[users] @ R
        score = np.einsum("nd,nkd->nk", uR, world.item_vec[cand]) + rng.gumbel(size=cand.shape) * 0.5
        order = np.argsort(-score, axis=1)[:, :H]
        picked = np.take_along_axis(cand, order, axis=1)
        picked = rng.permuted(picked, axis=1)
        valid = np.arange(H)[None, :] < lengths[users, None]
        hist[users] = np.where(valid, picked, -1)
    return hist


def _prepend_clicks(hist: np.ndarray, users: np.ndarray, items: np.ndarray, order_key: np.ndarray) -> np.ndarray:
    """Prepend each user's clicks (latest first) to their history, keeping hist_len."""
    if len(users) == 0:
        return hist
    H = hist.shape[1]
    o = np.lexsort((-order_key, users))  # by user, latest first
    users, items = users[o], items[o]
    starts = np.r_[0, np.flatnonzero(np.diff(users)) + 1]
    counts = np.diff(np.r_[starts, len(users)])
    rank = np.arange(len(users)) - np.repeat(starts, counts)
    u_unique = users[starts]
    new = np.full((len(u_unique), H), -1, dtype=np.int64)
    keep = rank < H
    new[np.repeat(np.arange(len(u_unique)), counts)[keep], rank[keep]] = items[keep]
    c = np.minimum(counts, H)[:, None]
    j = np.arange(H)[None, :]
    src = j - c
    old = hist[u_unique]
    shifted = np.take_along_axis(old, np.clip(src, 0, H - 1), axis=1)
    hist[u_unique] = np.where(src < 0, new, shifted)
    return hist


def _names(prefix: str, n: int) -> pa.Array:
    return pa.array([f"{prefix}{i}" for i in range(n)], type=pa.string())


def _lookup(names: pa.Array, idx: np.ndarray, mask: Optional[np.ndarray] = None) -> pa.Array:
    """names[idx] as a plain string array; null where mask is True."""
    out = pc.take(names, pa.array(idx.astype(np.int64)))
    if mask is not None and mask.any():
        out = pc.if_else(pa.array(~mask), out, pa.scalar(None, pa.string()))
    return out


def _hist_strings(hist: np.ndarray, names: pa.Array) -> pa.Array:
    """One space-separated string per user; null for an empty history."""
    valid = hist >= 0
    lengths = valid.sum(axis=1)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int32)
    flat = hist[valid]  # row-major keeps most-recent-first within a user
    values = pc.take(names, pa.array(flat))
    lists = pa.ListArray.from_arrays(pa.array(offsets), values)
    joined = pc.binary_join(lists, " ")
    return pc.if_else(pa.array(lengths > 0), joined, pa.scalar(None, pa.string()))


def _num(values: np.ndarray, present: np.ndarray, type_) -> pa.Array:
    return pa.array(values, type=type_, mask=~present)


def _fixed(values: np.ndarray, decimals: int, present: Optional[np.ndarray] = None) -> pa.Array:
    """Non-negative floats as fixed-point strings ("45.00", not "45").

    CsvExampleGen infers column types from the text; a float column whose values
    happen to be whole would otherwise be read as INT and fail the schema.
    """
    scaled = np.round(np.asarray(values, dtype=np.float64) * 10**decimals).astype(np.int64)
    whole = pc.cast(pa.array(scaled // 10**decimals), pa.string())
    frac = pc.utf8_lpad(pc.cast(pa.array(scaled % 10**decimals), pa.string()), decimals, "0")
    out = pc.binary_join_element_wise(whole, frac, ".")
    if present is not None and not present.all():
        out = pc.if_else(pa.array(present), out, pa.scalar(None, pa.string()))
    return out


def write_scenarios_csv(path: str, scenarios: Sequence[Scenario]) -> None:
    with open(path, "w") as f:
        f.write(",".join(contract.SCENARIO_COLUMNS) + "\n")
        for s in scenarios:
            f.write(",".join([s.scenario_id, s.role, s.exposure_position, s.business_type, s.item_family]) + "\n")


def generate(output: str, cfg: GeneratorConfig = GeneratorConfig(), progress: bool = True) -> Dict:
    """Writes the data set under `output` and returns its summary (also in truth.json).

    Writes to `<output>.tmp-<pid>` and renames at the end, so an interrupted run never
    leaves a half-written data set where the pipeline would read it.
    """
    cfg = cfg.resolved()
    supers = [s for s in cfg.scenarios if s.role == "super"]
    if len(supers) != 1:
        raise ValueError("exactly one scenario must have role 'super'")
    rng = np.random.default_rng(cfg.seed)
    t0 = time.time()
    tmp = f"{output.rstrip('/')}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)

    world = _World(cfg, rng)
    hist = _initial_histories(world, cfg, rng)
    S = len(cfg.scenarios)
    w = np.array([s.weight for s in cfg.scenarios])
    per_scenario = rng.multinomial(cfg.rows, w / w.sum())

    # Impressions: who sees what, where and when (labels are drawn day by day below).
    cols = {k: [] for k in ("user", "item", "scen", "day", "hour")}
    for s, sc in enumerate(cfg.scenarios):
        n = per_scenario[s]
        visitors = np.flatnonzero(world.member[:, s])
        p = world.user_activity[visitors]
        users = visitors[_draw(rng, p, n)]
        if sc.item_family == "general":
            eligible = np.arange(cfg.items)
        else:
            fam = _FAMILIES.index(sc.item_family)
            eligible = np.flatnonzero(world.cat_family[world.item_cat] == fam)
        ip = world.item_pop[eligible] / world.item_pop[eligible].sum()
        cand = eligible[_draw(rng, ip, (n, 2))]
        # A crude upstream ranker: half the time the better of two candidates is shown.
        a0 = world.affinity(users, cand[:, 0], world.scen_R[s])
        a1 = world.affinity(users, cand[:, 1], world.scen_R[s])
        ranked = rng.random(n) < 0.5
        items = np.where(ranked & (a1 > a0), cand[:, 1], cand[:, 0])
        cols["user"].append(users)
        cols["item"].append(items)
        cols["scen"].append(np.full(n, s))
        cols["day"].append(rng.integers(0, cfg.days, n))
        hour_p = np.array([1, 1, 1, 1, 1, 1, 2, 3, 4, 5, 5, 5, 6, 5, 5, 5, 5, 6, 7, 9, 10, 10, 8, 4], float)
        cols["hour"].append(_draw(rng, hour_p, n))
    imp = {k: np.concatenate(v) for k, v in cols.items()}
    order = np.lexsort((imp["hour"], imp["user"], imp["day"]))
    imp = {k: v[order] for k, v in imp.items()}
    N = len(order)
    # Scenario-specific context drawn for every row, kept only where the scenario has it.
    coupon = np.round(rng.exponential(8.0, N) * (rng.random(N) < 0.6), 1)
    pay_channel = rng.integers(0, len(_PAY_CHANNELS), N)
    watch = np.round(rng.exponential(45.0, N), 0)
    device = _draw(rng, np.array([0.45, 0.4, 0.1, 0.05]), N)
    device_effect = np.array([0.2, 0.0, -0.3, 0.1])
    n_rooms = max(20, cfg.shops // 4)
    live_room = world.item_shop[imp["item"]] % n_rooms
    noise = rng.random((N, 3))

    user_names, item_names = _names("u", cfg.users), _names("i", cfg.items)
    cat_names, shop_names = _names("c", cfg.categories), _names("s", cfg.shops)
    room_names = _names("room", n_rooms)
    scen_names = pa.array([s.scenario_id for s in cfg.scenarios], type=pa.string())
    has = {f: np.array([f in s.features for s in cfg.scenarios]) for f in contract.RAW_COLUMNS}
    het_kind = np.array([
        1 if "pay_channel" in s.features else 2 if "live_room_id" in s.features else 0 for s in cfg.scenarios
    ])
    ctr_bias = np.array([s.ctr_bias for s in cfg.scenarios])

    def write_day(day, sl, u, it, s, hr, cat, hist, sl_member, sl_coupon, sl_watch,
                  click, conversion, cart, p_click, p_cv, p_cart):
        """Formats one day as Arrow string columns and writes its CSV files (runs in a thread)."""
        n = len(u)
        present = lambda f: has[f][s]  # noqa: E731
        hist_ok = present("hist_item_ids")
        day_hist = _hist_strings(hist, item_names)
        day_hist_cat = _hist_strings(np.where(hist >= 0, world.item_cat[np.maximum(hist, 0)], -1), cat_names)
        hist_items = pc.if_else(pa.array(hist_ok), pc.take(day_hist, pa.array(u)), pa.scalar(None, pa.string()))
        hist_cats = pc.if_else(pa.array(hist_ok), pc.take(day_hist_cat, pa.array(u)), pa.scalar(None, pa.string()))
        session = pc.binary_join_element_wise(
            pc.take(user_names, pa.array(u)), pa.array(np.full(n, str(day))),
            pc.take(scen_names, pa.array(s)), pc.cast(pa.array(hr // 3), pa.string()), "-",
        )
        table = pa.table({
            "user_id": _lookup(user_names, u),
            "item_id": _lookup(item_names, it),
            "category_id": _lookup(cat_names, cat, ~present("category_id")),
            "shop_id": _lookup(shop_names, world.item_shop[it], ~present("shop_id")),
            "scenario_id": _lookup(scen_names, s),
            "day": pa.array(np.full(n, day), pa.int64()),
            "session_id": session,
            "hist_item_ids": hist_items,
            "hist_category_ids": hist_cats,
            "user_age_bucket": _num(world.user_age[u], present("user_age_bucket"), pa.int64()),
            "user_gender": _lookup(pa.array(_GENDERS), world.user_gender[u], ~present("user_gender")),
            "item_price": _fixed(world.item_price[it], 2, present("item_price")),
            "hour": _num(hr, present("hour"), pa.int64()),
            "pay_channel": _lookup(pa.array(_PAY_CHANNELS), pay_channel[sl], ~present("pay_channel")),
            "coupon_amount": _fixed(sl_coupon, 2, present("coupon_amount")),
            "member_level": _num(sl_member, present("member_level"), pa.int64()),
            "live_room_id": _lookup(room_names, live_room[sl], ~present("live_room_id")),
            "watch_seconds": _fixed(sl_watch, 1, present("watch_seconds")),
            "device_type": _lookup(pa.array(_DEVICES), device[sl], ~present("device_type")),
            "click": pa.array(click.astype(np.int64)),
            "conversion": pa.array(conversion.astype(np.int64)),
            "cart": pa.array(cart.astype(np.int64)),
            "p_click": _fixed(p_click, 5),
            "p_conversion": _fixed(p_cv, 5),
            "p_cart": _fixed(p_cart, 5),
        })
        assert tuple(table.column_names) == contract.RAW_COLUMNS
        day_dir = os.path.join(tmp, f"day={day}")
        os.makedirs(day_dir)
        written = []
        for part, start in enumerate(range(0, max(n, 1), cfg.rows_per_file)):
            path = os.path.join(day_dir, f"part-{part:05d}.csv")
            # CsvExampleGen takes header names verbatim: write them unquoted.
            with open(path, "wb") as f:
                f.write((",".join(table.column_names) + "\n").encode())
                pacsv.write_csv(
                    table.slice(start, cfg.rows_per_file), f, write_options=pacsv.WriteOptions(include_header=False)
                )
            written.append(os.path.relpath(path, tmp))
        return written

    iterator = range(cfg.days)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="generating days", unit="day", file=sys.stderr)
    files, stats = [], {"rows": 0, "clicks": 0, "conversions": 0, "carts": 0}
    day_starts = np.searchsorted(imp["day"], np.arange(cfg.days + 1))
    # Labels are drawn day by day (histories chain the days); formatting and writing
    # a day (Arrow kernels, which release the GIL) overlaps with drawing the next.
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    futures = []
    for day in iterator:
        sl = slice(day_starts[day], day_starts[day + 1])
        u, it, s, hr = imp["user"][sl], imp["item"][sl], imp["scen"][sl], imp["hour"][sl]
        n = len(u)
        cat = world.item_cat[it]
        uR = np.empty((n, cfg.latent_dim), np.float32)
        for k in range(S):  # u^T R_s, one matrix product per scenario
            rows_k = s == k
            uR[rows_k] = world.user_vec[u[rows_k]] @ world.scen_R[k]
        inter = np.einsum("nd,nd->n", uR, world.item_vec[it])
        inter_cv = np.einsum("nd,nd->n", uR, world.item_cv_vec[it])
        inter_cart = np.einsum("nd,nd->n", uR, world.item_cart_vec[it])
        h = hist[u]
        recent_cats = np.where(h[:, :5] >= 0, world.item_cat[np.maximum(h[:, :5], 0)], -1)
        in_hist = (recent_cats == cat[:, None]).any(axis=1)
        kind = het_kind[s]
        sl_coupon, sl_watch, sl_member = coupon[sl], watch[sl], world.user_member[u]
        logit = ctr_bias[s] + 1.5 * inter + world.shop_bias[world.item_shop[it]]
        homog = kind == 0
        logit += np.where(homog, world.age_cat[world.user_age[u], cat] + 0.9 * in_hist, 0.0)
        logit += np.where(kind == 1, 0.7 * np.log1p(sl_coupon) + 0.25 * sl_member - 0.4 * world.log_price_z[it], 0.0)
        logit += np.where(kind == 2, 0.6 * np.log1p(sl_watch / 30.0) + 0.3 * sl_member, 0.0)
        logit += np.where(kind > 0, device_effect[device[sl]], 0.0)
        p_click = _sigmoid(logit)
        p_cv = _sigmoid(-1.2 + 1.5 * inter_cv - 0.5 * world.log_price_z[it] + np.where(kind == 1, 0.3 * sl_member, 0.0))
        p_cart = _sigmoid(-0.8 + 1.5 * inter_cart + 0.4 * in_hist * homog)
        click = noise[sl, 0] < p_click
        conversion = click & (noise[sl, 1] < p_cv)
        cart = click & (noise[sl, 2] < p_cart)

        snapshot = hist.copy()  # the writer reads histories as of the start of the day
        futures.append(pool.submit(
            write_day, day, sl, u, it, s, hr, cat, snapshot, sl_member, sl_coupon, sl_watch,
            click, conversion, cart, p_click, p_cv, p_cart,
        ))
        hist_ok = has["hist_item_ids"][s]
        stats["rows"] += n
        stats["clicks"] += int(click.sum())
        stats["conversions"] += int(conversion.sum())
        stats["carts"] += int(cart.sum())
        clicked = click & hist_ok
        hist = _prepend_clicks(hist, u[clicked], it[clicked], hr[clicked].astype(np.int64) * 10**9 + np.flatnonzero(clicked))

    for f in futures:
        files.extend(f.result())
    pool.shutdown()
    write_scenarios_csv(os.path.join(tmp, "scenarios.csv"), cfg.scenarios)
    super_sc = supers[0]
    truth = {
        "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "scenarios"},
        "scenarios": [
            {
                "scenario_id": sc.scenario_id,
                "role": sc.role,
                "latent_cluster": sc.cluster,
                "features": list(sc.features),
                "feature_overlap_with_super": feature_overlap(sc, super_sc),
                "weight": sc.weight,
                "rows": int(per_scenario[i]),
            }
            for i, sc in enumerate(cfg.scenarios)
        ],
        "files": files,
        **stats,
        "seconds": round(time.time() - t0, 3),
    }
    with open(os.path.join(tmp, "truth.json"), "w") as f:
        json.dump(truth, f, indent=1)
    if os.path.exists(output):
        shutil.rmtree(output)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    os.rename(tmp, output)
    return truth


def _presets_help() -> str:
    lines = ["presets (--preset NAME; --rows, --days, --users, --items, --seed given explicitly override it):"]
    for name, cfg in PRESETS.items():
        r = cfg.resolved()
        lines.append(
            f"  {name}: {r.rows:,} rows over {r.days} days, {r.users:,} users, {r.items:,} items"
            f"{'' if cfg.users else ' (scaling with rows)'}:\n"
            f"    {r.rows / r.users:,.0f} impressions a user in all, smallest scenario "
            f"{min(expected_rows_per_day(r).values()):,.0f} expected rows a day"
        )
    rich = PRESETS["rich"].resolved()
    train_days = rich.days - 2
    lines.append(
        f"  rich is the quality benchmark's data, split by day (days 0-{train_days - 1} train, day {train_days} "
        f"validation,\n  day {train_days + 1} test): users have {rich.rows * train_days / rich.days / rich.users:,.0f} "
        f"impressions each on the train days on average\n"
        f"  (median about 215; activity is log-normal); every scenario has at least 3,000 test-day rows\n"
        f"  (the minor ones, at a quarter of a homogeneous one instead of a tenth: "
        f"{min(expected_rows_per_day(rich).values()):,.0f} expected);\n"
        f"  --seed draws other data sets of the same shape."
    )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], epilog=_presets_help(), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--output", required=True, help="data folder to write (replaced if it exists)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="named configuration; without one, users and items scale with rows (rows // 40, at least "
                        "500); see below")
    p.add_argument("--rows", type=int, default=None, help="total rows (default: the preset's)")
    p.add_argument("--days", type=int, default=None, help="days (default: the preset's)")
    p.add_argument("--users", type=int, default=None, help="users (default: the preset's, or rows // 40)")
    p.add_argument("--items", type=int, default=None, help="items (default: the preset's, or rows // 40)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the preset's, 7)")
    p.add_argument("--no-progress", action="store_true")
    return p


def parse_args(argv: Optional[List[str]] = None):
    """(GeneratorConfig, parsed arguments): the preset with the flags given explicitly applied."""
    p = _parser()
    a = p.parse_args(argv)
    if (a.rows is not None and a.rows <= 0) or (a.days is not None and a.days <= 0):
        p.error("--rows and --days must be positive")
    flags = dict(rows=a.rows, days=a.days, users=a.users, items=a.items, seed=a.seed)
    if a.preset is None:
        return dataclasses.replace(GeneratorConfig(), **{k: v for k, v in flags.items() if v is not None}), a
    return preset_config(a.preset, **flags), a


def main(argv: Optional[List[str]] = None) -> int:
    cfg, a = parse_args(argv)
    truth = generate(a.output, cfg, progress=not a.no_progress)
    rate = truth["rows"] / max(truth["seconds"], 1e-9)
    print(
        f"wrote {truth['rows']} rows ({truth['clicks']} clicks) in {len(truth['files'])} files under {a.output} "
        f"in {truth['seconds']:.1f}s ({rate:,.0f} rows/s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
