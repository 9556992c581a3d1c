"""Metrics of a model on the raw test split, per scenario and task.

The test split (ExampleGen's last day, raw tf.Examples) is scored through the
exported SavedModel exactly as a serving client would. Per slice (ALL and each
scenario) and task:

- `auc`: ROC AUC (ties count half), with `auc_ci`, its 95% DeLong interval;
- `gauc`: user-weighted AUC over the users that have both labels in the slice
  (KEEP's and SAMD's GAUC), each user's AUC weighted by the user's impressions,
  with `gauc_ci`, its 95% bootstrap interval over users;
- `positives`, `negatives` and `readable`: whether the slice has at least
  MIN_CLASS of each class (a cell with fewer is too small to read);
- `logloss`, `calibration` (mean prediction / mean label), `oracle_auc` (the AUC
  of the generator's true probabilities, when the data carries them).

Click is scored over impressions; conversion and cart over clicked impressions,
as they are trained. A metric that cannot be computed (one class only) is None.
"""

import os
from statistics import NormalDist
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
from sklearn.metrics import log_loss

TASKS = ("click", "conversion", "cart")
ORACLE = {"click": "p_click", "conversion": "p_conversion", "cart": "p_cart"}
ALL = "ALL"
GROUPS = ("homogeneous", "heterogeneous", "minor")  # SAMD Table 1's groups (roles in scenarios.csv)
# With fewer positives or negatives than this, a 95% AUC interval is about +-0.07 or wider: too wide to rank by.
MIN_CLASS = 50
Interval = Tuple[float, float, float]  # (value, low, high)


def eval_files(examples_uri: str, split: str = "test") -> List[str]:
    from tfx.dsl.io import fileio

    files = sorted(fileio.glob(os.path.join(examples_uri, f"Split-{split}", "*")))
    if not files:
        raise FileNotFoundError(f"{examples_uri}: no Split-{split} files to evaluate on")
    return files


class ExampleSource:
    """Serialized tf.Examples read in batches: streamed from TFRecord files (bounded memory), or an array.

    The evaluator passes over the test split once per scoring pass, never holding it
    whole; tests and small callers may hand over an in-memory array instead.
    """

    def __init__(self, files: Optional[Iterable[str]] = None, rows=None, count: Optional[int] = None):
        self._files = None if files is None else list(files)
        self._rows = None if rows is None else np.asarray(rows, dtype=object)
        self._count = len(self._rows) if self._rows is not None else count

    @classmethod
    def of(cls, rows) -> "ExampleSource":
        return rows if isinstance(rows, cls) else cls(rows=rows)

    def __len__(self) -> int:
        if self._count is None:
            self._count = sum(len(b) for _, b in self.batches())
        return self._count

    def batches(self, batch_size: int = 4096):
        """(first row index, tf.string tensor of the serialized rows) per batch, in file order."""
        import tensorflow as tf

        if self._rows is not None:
            for s in range(0, len(self._rows), batch_size):
                yield s, tf.constant(list(self._rows[s:s + batch_size]), tf.string)
            return
        start = 0
        for batch in tf.data.TFRecordDataset(self._files, compression_type="GZIP").batch(batch_size).prefetch(2):
            yield start, batch
            start += int(batch.shape[0])


# Columns of the table: name in the table -> feature of the raw tf.Example
_ID_COLUMNS = {"scenario": "scenario_id", "user": "user_id", "item": "item_id", "category": "category_id"}


def _column_spec(first: bytes) -> Dict:
    """A parse spec of the table's features, typed as the first example has them (ExampleGen types them per file)."""
    import tensorflow as tf

    example = tf.train.Example.FromString(first)
    spec = {}
    for name in [*_ID_COLUMNS.values(), *TASKS, *ORACLE.values()]:
        f = example.features.feature.get(name)
        kind = f.WhichOneof("kind") if f is not None else None
        if kind is None:
            continue
        # VarLen: a row may hold the feature with no value (a scenario without it), which FixedLen rejects
        spec[name] = tf.io.VarLenFeature({"bytes_list": tf.string, "int64_list": tf.int64,
                                          "float_list": tf.float32}[kind])
    return spec


def _first_values(sparse, rows: int) -> np.ndarray:
    """Each row's first value of a parsed VarLen feature; "" / 0 / NaN where the row has none."""
    import tensorflow as tf

    default = {tf.string: b"", tf.int64: 0, tf.float32: float("nan")}[sparse.dtype]
    dense = tf.sparse.to_dense(sparse, default_value=default).numpy()
    if dense.shape[1] == 0:
        return np.full(rows, default, dtype=dense.dtype)
    return dense[:, 0]


def read_split(files: Iterable[str], batch_size: int = 8192):
    """(ExampleSource streaming `files`, column table): scenario, user, item and category ids as
    numpy string arrays, labels and the generator's true probabilities (where every row has them)."""
    import tensorflow as tf

    source = ExampleSource(files)
    spec, parts, n = None, {}, 0
    for _, batch in source.batches(batch_size):
        if spec is None:
            spec = _column_spec(batch[0].numpy())
        parsed = tf.io.parse_example(batch, spec)
        for name, value in parsed.items():
            parts.setdefault(name, []).append(_first_values(value, int(batch.shape[0])))
        n += int(batch.shape[0])
    source._count = n

    def column(name, dtype):
        if name not in parts:
            return None
        values = np.concatenate(parts.pop(name))
        if values.dtype == object:  # bytes
            return np.char.decode(values.astype(np.bytes_), "utf-8")
        return values.astype(dtype)

    table = {key: (column(feature, str) if feature in (spec or {}) else np.full(n, "", dtype=str))
             for key, feature in _ID_COLUMNS.items()}
    for t in TASKS:
        labels = column(t, np.int64)
        table[t] = labels if labels is not None else np.zeros(n, np.int64)
        oracle = column(ORACLE[t], np.float64)
        if oracle is not None and not np.isnan(oracle).any():
            table[ORACLE[t]] = oracle
    return source, table


def load_examples(files: Iterable[str]):
    """Serialized rows (an array) and the column table: `read_split` held in memory, for small splits and tests."""
    source, table = read_split(files)
    rows = [r for _, batch in source.batches() for r in batch.numpy()]
    return np.array(rows, dtype=object), table


def score(signature, rows, tasks=TASKS, batch_size: int = 2048, extra=None) -> Dict[str, np.ndarray]:
    """Probabilities per task from a `serving_default` signature on serialized tf.Examples (an array).

    `extra`: {input name: array aligned with rows} for inputs besides `examples`
    (a KEEP-plugged model's `knowledge`).
    """
    import tensorflow as tf

    out = {t: [] for t in tasks}
    for s in range(0, len(rows), batch_size):
        more = {k: tf.constant(v[s:s + batch_size]) for k, v in (extra or {}).items()}
        res = signature(examples=tf.constant(list(rows[s:s + batch_size])), **more)
        for t in tasks:
            out[t].append(res[t].numpy().reshape(-1))
    return {t: np.concatenate(v) if v else np.zeros(0) for t, v in out.items()}


def score_masked(source: ExampleSource, scorers, batch_size: int = 4096) -> None:
    """One pass over `source`: each scorer predicts the rows its mask selects, written into its arrays.

    A scorer: (signature, {task or output: float array over all rows}, bool mask over all rows,
    extra(first, last, mask) -> {input: array} or None). Rows outside a mask are left as they are.
    """
    import tensorflow as tf

    for start, batch in source.batches(batch_size):
        end = start + int(batch.shape[0])
        for signature, out, mask, extra in scorers:
            chosen = mask[start:end]
            if not chosen.any():
                continue
            more = extra(start, end, chosen) if extra else None
            res = signature(examples=tf.boolean_mask(batch, chosen), **(more or {}))
            for name, values in out.items():
                values[start:end][chosen] = res[name].numpy().reshape(-1)


def _midranks(x, groups) -> np.ndarray:
    """1-based ranks of x within each (int) group, ties sharing their mean rank."""
    x, groups = np.asarray(x, np.float64), np.asarray(groups, np.int64)
    order = np.lexsort((x, groups))
    xs, gs = x[order], groups[order]
    new_group = np.r_[True, gs[1:] != gs[:-1]]
    starts = np.flatnonzero(new_group | np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], len(x)]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(x)), 0))
    ranks = np.empty(len(x))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0 - group_start[starts], ends - starts)
    return ranks


def _below(groups, y, s) -> np.ndarray:
    """Per row, how many rows of the other class in its group score below it (ties count half).

    Rank among the group minus rank among its own class (Sun & Xu 2014), so no
    pairwise comparison is made.
    """
    return _midranks(s, groups) - _midranks(s, 2 * groups + y)


def _placements(y, s):
    """DeLong's structural components: V10, per positive the share of negatives it outranks, and
    V01, per negative the share of positives that outrank it (ties count half). Both average to the AUC."""
    below = _below(np.zeros(len(y), np.int64), y, s)
    return below[y] / (~y).sum(), 1.0 - below[~y] / y.sum()


def _binary(labels) -> np.ndarray:
    return np.asarray(labels) > 0


def auc(labels, scores) -> Optional[float]:
    """ROC AUC, ties counting half (scikit-learn's); None with one class."""
    y = _binary(labels)
    if y.all() or not y.any():
        return None
    return float(_placements(y, np.asarray(scores))[0].mean())


def _delong(labels, *scores):
    """(AUC per score vector, their DeLong covariance), or None without two rows of each class."""
    y = _binary(labels)
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:  # a single row of a class leaves its components' variance undefined
        return None
    v10, v01 = (np.array(v) for v in zip(*(_placements(y, np.asarray(s)) for s in scores)))
    return v10.mean(1), np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n


def _normal_interval(value, variance, level, low, high) -> Interval:
    half = NormalDist().inv_cdf((1 + level) / 2) * np.sqrt(max(variance, 0.0))  # rounding can dip below 0
    return float(value), float(max(low, value - half)), float(min(high, value + half))


def auc_interval(labels, scores, level: float = 0.95) -> Optional[Interval]:
    """(AUC, low, high): DeLong's asymptotic normal interval, clipped to [0, 1].

    DeLong's variance is exact for the AUC as a U-statistic and costs two sorts
    (Sun & Xu's midrank algorithm), where a bootstrap would cost a thousand AUCs.
    None when a class has fewer than two rows (with one class there is no AUC).
    """
    d = _delong(labels, scores)
    return None if d is None else _normal_interval(d[0][0], d[1][0, 0], level, 0.0, 1.0)


def paired_auc_difference(labels, scores_a, scores_b, level: float = 0.95) -> Optional[Interval]:
    """(AUC(a) - AUC(b), low, high) of two models on the same rows: DeLong's paired test.

    The two AUCs are correlated (same rows), so the difference's variance is
    var(a) + var(b) - 2 cov(a, b), much tighter than two separate intervals suggest.
    """
    d = _delong(labels, scores_a, scores_b)
    if d is None:
        return None
    (a, b), cov = d
    return _normal_interval(a - b, cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], level, -1.0, 1.0)


def paired_auc_difference_over_seeds(labels, pairs, level: float = 0.95) -> Optional[Interval]:
    """(mean over seeds of AUC(a) - AUC(b), low, high): two methods, each trained once per seed, on the same rows.

    `pairs`: [(scores_a, scores_b), ...], one per seed. Two sources of error, and the
    half-width is the sum of both (conservative; each is bounded separately):
    * the seeds: Student's t on the per-seed differences, t_{S-1} s / sqrt(S) (with 3
      seeds t is 4.30, so only a difference that is consistent across seeds passes);
    * the test rows, which every seed shares, so their noise does not show in the
      seeds' spread: DeLong's variance of the mean difference, a linear contrast of the
      structural components (per row, the components' mean over the seeds).
    None with fewer than 2 seeds or 2 rows of each class.
    """
    parts = over_seeds_parts(labels, pairs)
    return None if parts is None else over_seeds_interval(*parts, level=level)


def over_seeds_parts(labels, pairs) -> Optional[Tuple[List[float], float]]:
    """(the per-seed AUC differences, DeLong's variance of their mean on these rows); see
    paired_auc_difference_over_seeds. Parts of disjoint row sets combine: a mean of K
    such differences has the mean per-seed differences and the variances' sum over K²."""
    y = _binary(labels)
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2 or len(pairs) < 2:
        return None
    v10, v01, diffs = np.zeros(m), np.zeros(n), []
    for a, b in pairs:
        a10, a01 = _placements(y, np.asarray(a))
        b10, b01 = _placements(y, np.asarray(b))
        diffs.append(float(a10.mean() - b10.mean()))
        v10 += (a10 - b10) / len(pairs)
        v01 += (a01 - b01) / len(pairs)
    return diffs, float(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n)


def over_seeds_interval(diffs, row_variance: float, level: float = 0.95) -> Interval:
    """mean(diffs) ± (t_{S-1} s / sqrt(S) + z sqrt(row_variance)), clipped to [-1, 1]."""
    from scipy import stats  # only here: the evaluator's other paths do not need it

    seeds = stats.t.ppf((1 + level) / 2, len(diffs) - 1) * np.std(diffs, ddof=1) / np.sqrt(len(diffs))
    rows = NormalDist().inv_cdf((1 + level) / 2) * np.sqrt(max(row_variance, 0.0))
    mean = float(np.mean(diffs))
    return mean, float(max(-1.0, mean - seeds - rows)), float(min(1.0, mean + seeds + rows))


def _user_aucs(users, labels, *scores):
    """(AUC per user and score vector [k x users], impressions per user) over users with both labels."""
    users = np.asarray(users)
    if users.dtype == object:  # numpy sorts fixed-width strings in C, Python objects one comparison at a time
        users = users.astype(str)
    _, codes = np.unique(users, return_inverse=True)
    codes = codes.reshape(-1)
    y = _binary(labels)
    rows = np.bincount(codes)
    pos = np.bincount(codes, weights=y, minlength=len(rows))
    neg = rows - pos
    both = (pos > 0) & (neg > 0)  # a single-class user says nothing about ranking
    if not both.any():
        return np.zeros((len(scores), 0)), np.zeros(0)
    aucs = np.array([np.bincount(codes, weights=_below(codes, y, np.asarray(s)) * y, minlength=len(rows))[both]
                     for s in scores]) / (pos * neg)[both]
    return aucs, rows[both].astype(np.float64)


def _weighted_mean(aucs, weights):
    return aucs @ weights / weights.sum()


def gauc(users, labels, scores) -> Optional[float]:
    """Impression-weighted mean of per-user AUC over users with both labels."""
    aucs, weights = _user_aucs(users, labels, scores)
    return float(_weighted_mean(aucs, weights)[0]) if len(weights) else None


def _bootstrap_users(aucs, weights, resamples: int, seed: int) -> np.ndarray:
    """GAUC of each score vector [resamples x k] over users drawn with replacement (same draws for all)."""
    rng = np.random.default_rng(seed)
    n = len(weights)
    terms = np.vstack([aucs * weights, weights])  # numerators, then the denominator
    out = []
    chunk = max(1, 2 ** 22 // n)  # bounds the (chunk x users) index matrix to 32 MB
    for done in range(0, resamples, chunk):
        sums = terms[:, rng.integers(0, n, size=(min(chunk, resamples - done), n))].sum(-1)
        out.append((sums[:-1] / sums[-1]).T)
    return np.concatenate(out)


def _percentile_interval(value, samples, level) -> Interval:
    low, high = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return float(value), float(low), float(high)


def gauc_interval(users, labels, scores, level: float = 0.95, resamples: int = 1000,
                  seed: int = 0) -> Optional[Interval]:
    """(GAUC, low, high): percentile bootstrap over users.

    Users, not rows, are GAUC's unit (each user's AUC is one observation, weighted
    by impressions), and a user's rows are not independent, so users are resampled;
    there is no closed form for a weighted mean of per-user AUCs. Per-user AUCs are
    computed once, so a resample costs a weighted mean. None when no user has both labels.
    """
    aucs, weights = _user_aucs(users, labels, scores)
    if not len(weights):
        return None
    boot = _bootstrap_users(aucs, weights, resamples, seed)[:, 0]
    return _percentile_interval(_weighted_mean(aucs, weights)[0], boot, level)


def paired_gauc_difference(users, labels, scores_a, scores_b, level: float = 0.95, resamples: int = 1000,
                           seed: int = 0) -> Optional[Interval]:
    """(GAUC(a) - GAUC(b), low, high): the same bootstrap draws of users for both models,
    so the users both models find easy or hard cancel out of the difference."""
    aucs, weights = _user_aucs(users, labels, scores_a, scores_b)
    if not len(weights):
        return None
    boot = _bootstrap_users(aucs, weights, resamples, seed)
    a, b = _weighted_mean(aucs, weights)
    return _percentile_interval(a - b, boot[:, 0] - boot[:, 1], level)


def task_rows(table, mask, task) -> np.ndarray:
    """The rows of `mask` a task is scored on: click over impressions, the others over clicks."""
    return mask if task == "click" else mask & (table["click"] == 1)


def clipped(predictions) -> np.ndarray:
    return np.clip(predictions, 1e-7, 1 - 1e-7)


def slice_metrics(table, pred, mask, task) -> Dict:
    m = task_rows(table, mask, task)
    y, p = table[task][m], clipped(pred[task][m])
    positives = int(y.sum())
    negatives = len(y) - positives
    auc_ci, gauc_ci = auc_interval(y, p), gauc_interval(table["user"][m], y, p)
    out = {"rows": int(m.sum()), "positives": positives, "negatives": negatives,
           "auc": auc_ci[0] if auc_ci else auc(y, p), "auc_ci": list(auc_ci[1:]) if auc_ci else None,
           "gauc": gauc_ci[0] if gauc_ci else None, "gauc_ci": list(gauc_ci[1:]) if gauc_ci else None,
           "readable": min(positives, negatives) >= MIN_CLASS,
           "logloss": float(log_loss(y, p, labels=[0, 1])) if len(y) else None,
           "calibration": float(p.mean() / y.mean()) if len(y) and y.mean() > 0 else None,
           "oracle_auc": auc(y, table[ORACLE[task]][m]) if ORACLE[task] in table else None}
    return out


def evaluate(table, pred, tasks=TASKS, covered=None) -> Dict[str, Dict[str, Dict]]:
    """{slice: {task: metrics}} for ALL and each scenario.

    `covered`: the rows the model scored, one boolean mask for all tasks or
    {task: mask} (a SAMD student scores only its own scenario, and a single-task
    student only click); slices and tasks with no covered row are left out.
    """
    n = len(table["scenario"])
    if covered is None:
        covered = np.ones(n, bool)
    if not isinstance(covered, dict):
        covered = {t: covered for t in tasks}
    anywhere = np.zeros(n, bool)
    for t in tasks:
        anywhere |= covered.get(t, np.zeros(n, bool))
    result = {}
    for s in [ALL] + sorted(set(table["scenario"][anywhere].tolist())):
        in_slice = np.ones(n, bool) if s == ALL else table["scenario"] == s
        result[s] = {t: slice_metrics(table, pred, in_slice & covered[t], t) for t in tasks
                     if t in pred and t in covered and (in_slice & covered[t]).any()}
    return result


def group_means(per_slice: Dict, roles: Dict[str, str], metric: str = "auc") -> Dict[str, Dict[str, float]]:
    """Mean of a metric over each role group's scenarios (SAMD Table 1), per task."""
    out = {}
    for group in GROUPS:
        members = [s for s, r in roles.items() if r == group and s in per_slice]
        if not members:
            continue
        out[group] = {}
        for t in TASKS:
            values = [per_slice[s][t][metric] for s in members if t in per_slice[s]
                      and per_slice[s][t][metric] is not None]
            out[group][t] = float(np.mean(values)) if values else None
    return out


def rela_impr(model_auc: Optional[float], base_auc: Optional[float]) -> Optional[float]:
    """ADL's RelaImpr, in percent: ((AUC(model) - 0.5) / (AUC(base) - 0.5) - 1) * 100."""
    if model_auc is None or base_auc is None or base_auc == 0.5:
        return None
    return ((model_auc - 0.5) / (base_auc - 0.5) - 1.0) * 100.0
