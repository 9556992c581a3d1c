"""KEEP's cacheable knowledge: decomposition, degeneration (paper section 5.2, Equation 6)
and the lookup model of the General Knowledge Center (GKC, Figure 5).

The full knowledge K(u, i) needs a forward pass per (user, item) pair, too many to
cache. Section 5.2 replaces it by parts that depend on one key each:

* decomposition: a two-tower structure, K_ui ~ K̂_u ⊙ K̂_i (user tower, item tower);
* degeneration: the interaction kept, but with the item replaced by its category:
  K̂_uc from the user's features and the category (target attention of the category
  over the user's category history);
* both (the paper's production choice, Equation 6):
  K̂(u, i, c) = [K̂_u, K̂_i, K̂_u ⊙ K̂_i, K̂_uc].

`CacheableKnowledgeModel` trains these heads on KEEP's three tasks (click over
impressions; conversion and cart over clicks), each task's logit an MLP over the
strategy's knowledge vector. `KnowledgeCache` is the GKC's servable: hash tables from
raw string keys (user id, item id, "user_id|category_id") to rows of the cached parts,
assembling Equation 6 per request; unseen keys get the zero vector (documented
default: "no knowledge", which a zero-initialised plug-in maps to no change) and a
`found` flag per part. Only stock TensorFlow ops (hash tables, gather).

Readings of the paper:
* "·" in Equation 6 is read as the element-wise product (the decomposition's
  K̂_u ⊙ K̂_i), not a dot product: it keeps the width of the parts.
* K̂_u is computed from the user's profile and behaviour sequence at cache time; the
  cache keeps the latest value per user (an online system refreshes it per version).
  Training rows are joined point in time (`knowledge_as_of`): a row of day d gets each
  key's parts as of the latest day before d, as a cache refreshed nightly serves it.

Example:
    model = CacheableKnowledgeModel(CacheableKnowledgeConfig(strategy="both"), vocab_sizes)
    parts = model.parts(features)              # {"user", "item", "user_category"}
    daily = daily_tables(model, batches)       # batches of (features, raw ids and days)
    tables = latest_tables(daily)              # each key's latest parts: what is served
    cache = KnowledgeCache("both", tables, version="3")
    out = cache.lookup(user_ids, item_ids, category_ids)   # {"knowledge", "found_user", ...}
"""

from __future__ import annotations

import bisect
import dataclasses
from typing import Dict, Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from models import registry
from models.keep import TargetAttention
from models.multitask import TASKS, MultiTaskSteps, task_metrics
from models.configs import FromDict

STRATEGIES = ("decomposition", "degeneration", "both")
KEY_SEPARATOR = "|"  # user-category pair key: f"{user_id}|{category_id}"


def knowledge_parts(strategy: str):
    """The parts of K̂ for a strategy, in order (Equation 6 for "both")."""
    return {"decomposition": ("user", "item", "user_x_item"),
            "degeneration": ("user", "item", "user_category"),
            "both": ("user", "item", "user_x_item", "user_category")}[strategy]


@dataclasses.dataclass(frozen=True)
class CacheableKnowledgeConfig(FromDict):
    strategy: str = "both"
    embedding_dim: int = 16
    knowledge_dim: int = 32  # width of each of K̂_u, K̂_i, K̂_uc
    tower_units: Tuple[int, ...] = (64,)
    task_units: Tuple[int, ...] = (32,)
    attention_units: Tuple[int, ...] = (32, 16)
    learning_rate: float = 1e-3
    batch_size: int = 512
    user_features: Tuple[str, ...] = ("user_id", "user_gender", "user_age_bucket")
    item_features: Tuple[str, ...] = ("item_id", "category_id", "shop_id")
    item_numeric: Tuple[str, ...] = ("item_price",)
    history: Tuple[Tuple[str, str], ...] = (("hist_item_ids", "item_id"), ("hist_category_ids", "category_id"))

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy {self.strategy!r}: one of {STRATEGIES}")

    def knowledge_width(self) -> int:
        return self.knowledge_dim * len(knowledge_parts(self.strategy))


def _mlp(units, out, name):
    return tf_keras.Sequential([tf_keras.layers.Dense(u, activation="relu") for u in units]
                               + [tf_keras.layers.Dense(out)], name=name)


class CacheableKnowledgeModel(MultiTaskSteps, tf_keras.Model):
    """Decomposition / degeneration heads of KEEP, trained on click, conversion and cart."""

    CONFIG_CLASS = CacheableKnowledgeConfig

    def __init__(self, config: CacheableKnowledgeConfig, vocab_sizes: Mapping[str, int], **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.vocab_sizes = dict(vocab_sizes)
        names = set(config.user_features) | set(config.item_features)
        self.embeddings = {n: tf_keras.layers.Embedding(self.vocab_sizes[n], config.embedding_dim,
                                                        name=f"embedding_{n}") for n in sorted(names)}
        d = config.knowledge_dim
        self.user_tower = _mlp(config.tower_units, d, "user_tower")
        self.item_tower = _mlp(config.tower_units, d, "item_tower")
        parts = knowledge_parts(config.strategy)
        if "user_category" in parts:
            self.category_attention = TargetAttention(config.attention_units, name="category_attention")
            self.user_category_tower = _mlp(config.tower_units, d, "user_category_tower")
        self.heads = {t: _mlp(config.task_units, 1, f"head_{t}") for t in TASKS}
        self.loss_tracker, self.auc = task_metrics()

    def _user_input(self, features):
        c = self.config
        parts = [self.embeddings[n](features[n]) for n in c.user_features]
        for seq, target in c.history:  # mean of the behaviour sequence: it depends on the user only
            ids = features[seq]
            mask = tf.cast(ids > 0, tf.float32)[..., None]
            emb = self.embeddings[target](ids)
            parts.append(tf.math.divide_no_nan(tf.reduce_sum(emb * mask, 1), tf.reduce_sum(mask, 1)))
        return tf.concat(parts, -1)

    def parts(self, features) -> Dict[str, tf.Tensor]:
        """The cacheable parts: K̂_u (user only), K̂_i (item only), K̂_uc (user and category)."""
        c = self.config
        user_input = self._user_input(features)
        item_input = tf.concat([self.embeddings[n](features[n]) for n in c.item_features]
                               + [tf.reshape(tf.cast(features[n], tf.float32), [-1, 1]) for n in c.item_numeric], -1)
        out = {"user": self.user_tower(user_input), "item": self.item_tower(item_input)}
        if "user_category" in knowledge_parts(c.strategy):
            category = self.embeddings["category_id"](features["category_id"])
            seq = features["hist_category_ids"]
            pooled = self.category_attention(category, self.embeddings["category_id"](seq), seq > 0)
            out["user_category"] = self.user_category_tower(tf.concat([user_input, category, pooled], -1))
        return out

    def call(self, features, training=None):
        knowledge = assemble(self.parts(features), self.config.strategy)
        logits = {t: tf.squeeze(self.heads[t](knowledge), -1) for t in TASKS}
        out = {t: tf.sigmoid(logits[t]) for t in TASKS}
        out.update({f"{t}_logit": logits[t] for t in TASKS})
        out["knowledge"] = knowledge
        return out


def assemble(parts: Mapping[str, tf.Tensor], strategy: str) -> tf.Tensor:
    """K̂(u, i, c) from its cached parts (Equation 6 for "both")."""
    pieces = []
    for name in knowledge_parts(strategy):
        pieces.append(parts["user"] * parts["item"] if name == "user_x_item" else parts[name])
    return tf.concat(pieces, -1)


def pair_key(user_ids, category_ids):
    """The user-category cache key, "<user_id>|<category_id>", for string tensors or arrays."""
    if isinstance(user_ids, tf.Tensor):
        return tf.strings.join([user_ids, category_ids], separator=KEY_SEPARATOR)
    return np.array([f"{u}{KEY_SEPARATOR}{c}" for u, c in zip(user_ids, category_ids)], dtype=object)


def _strings(values) -> list:
    return [str(v.decode() if isinstance(v, bytes) else v) for v in np.asarray(values).tolist()]


def daily_tables(model: CacheableKnowledgeModel, batches) -> Dict[str, Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{part: (keys, days, rows)}: each key's parts as of the end of each day it appears on.

    `batches` yields (transformed features, {"user_id", "item_id", "category_id": raw
    string ids, "day": the rows' days (optional, 0 if absent)}), oldest day first; within
    a day the last row of a key wins (histories refresh daily, so its rows agree).
    """
    latest = {name: {} for name in ("user", "item", "user_category")}
    for features, raw in batches:
        parts = {k: v.numpy() for k, v in model.parts(features).items()}
        users, items, cats = _strings(raw["user_id"]), _strings(raw["item_id"]), _strings(raw["category_id"])
        days = np.asarray(raw["day"], np.int64) if "day" in raw else np.zeros(len(users), np.int64)
        for n, (u, i, d) in enumerate(zip(users, items, days.tolist())):
            latest["user"][(u, d)] = parts["user"][n]
            latest["item"][(i, d)] = parts["item"][n]
            if "user_category" in parts:
                latest["user_category"][(f"{u}{KEY_SEPARATOR}{cats[n]}", d)] = parts["user_category"][n]
    return {name: (np.array([k for k, _ in rows], dtype=object), np.array([d for _, d in rows], np.int64),
                   np.stack(list(rows.values())))
            for name, rows in latest.items() if rows}


def latest_tables(daily: Mapping[str, Tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Dict[str, Tuple[list, np.ndarray]]:
    """{part: (keys, rows)}: each key's rows of its latest day in `daily_tables`' output."""
    out = {}
    for name, (keys, days, rows) in daily.items():
        last = {}
        for n in np.lexsort((np.arange(len(days)), days)).tolist():
            last[keys[n]] = n  # by day, then as seen: the latest overwrites
        out[name] = (list(last), rows[list(last.values())])
    return out


def knowledge_as_of(tables: Mapping[str, Tuple[np.ndarray, np.ndarray, np.ndarray]], strategy: str,
                    user_ids, item_ids, category_ids, days) -> np.ndarray:
    """Point-in-time K̂ (Equation 6) for rows of raw ids on `days`: each part from its key's
    latest day strictly before the row's day, zeros when there is none.

    What a row of day d is served by a cache refreshed the night before: no knowledge
    computed from day d or later reaches it (a key's parts of day d come from the
    features of day d's rows, and later days' histories hold day d's clicks).
    """
    days = np.asarray(days, np.int64)
    queries = {"user": _strings(user_ids), "item": _strings(item_ids),
               "user_category": list(pair_key(_strings(user_ids), _strings(category_ids)))}
    parts = {}
    for name, (keys, key_days, rows) in tables.items():
        order = np.lexsort((key_days, keys.astype(str)))
        index = {}  # key -> (its days ascending, row numbers)
        for n in order.tolist():
            index.setdefault(keys[n], ([], []))
            index[keys[n]][0].append(int(key_days[n]))
            index[keys[n]][1].append(n)
        out = np.zeros((len(days), rows.shape[1]), np.float32)
        for r, (key, d) in enumerate(zip(queries[name], days.tolist())):
            found = index.get(key)
            if found:
                k = bisect.bisect_left(found[0], d) - 1
                if k >= 0:
                    out[r] = rows[found[1][k]]
        parts[name] = tf.constant(out)
    return assemble(parts, strategy).numpy()


class KnowledgeCache(tf.Module):
    """The GKC servable: raw ids in, K̂(u, i, c) out, from cached parts.

    Each table maps a string key to a row of a matrix whose last row is the zero
    default, so an unseen key yields zeros and `found_<part> = False`.
    """

    def __init__(self, strategy: str, tables: Mapping[str, Tuple[Sequence[str], np.ndarray]], version: str = ""):
        super().__init__(name=registry.KNOWLEDGE_MODEL)
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy {strategy!r}: one of {STRATEGIES}")
        self.strategy = strategy
        needed = {"user", "item"} | ({"user_category"} if "user_category" in knowledge_parts(strategy) else set())
        missing = needed - set(tables)
        if missing:
            raise ValueError(f"knowledge cache for {strategy!r} lacks table(s) {sorted(missing)}")
        widths = {np.asarray(rows).shape[1] for _, rows in tables.values()}
        if len(widths) != 1:
            raise ValueError(f"cached parts differ in width: {sorted(widths)}")
        self.width = widths.pop()
        self.version = tf.constant(str(version))
        self._tables, self._rows = {}, {}
        for name in sorted(needed):
            keys, rows = tables[name]
            keys = np.asarray([str(k) for k in keys], dtype=object)
            if len(set(keys.tolist())) != len(keys):
                raise ValueError(f"knowledge table {name!r} has duplicate keys")
            rows = np.asarray(rows, np.float32)
            self._tables[name] = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(tf.constant(keys.astype(bytes)), tf.range(len(keys), dtype=tf.int64)),
                default_value=len(keys))
            # Variables, not constants: a cache of millions of rows must not sit in the graph.
            self._rows[name] = tf.Variable(np.concatenate([rows, np.zeros((1, self.width), np.float32)]),
                                           trainable=False, name=f"{name}_rows")

    def _part(self, name, keys):
        index = self._tables[name].lookup(keys)
        return tf.gather(self._rows[name], index), index < tf.shape(self._rows[name], out_type=tf.int64)[0] - 1

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id"),
                                  tf.TensorSpec([None], tf.string, name="item_id"),
                                  tf.TensorSpec([None], tf.string, name="category_id")])
    def lookup(self, user_id, item_id, category_id):
        parts, out = {}, {}
        parts["user"], out["found_user"] = self._part("user", user_id)
        parts["item"], out["found_item"] = self._part("item", item_id)
        if "user_category" in self._tables:
            parts["user_category"], out["found_user_category"] = self._part("user_category",
                                                                            pair_key(user_id, category_id))
        out["knowledge"] = assemble(parts, self.strategy)  # Equation 6
        out["version"] = tf.fill(tf.shape(user_id), self.version)
        return out

    def save(self, export_dir: str) -> None:
        tf.saved_model.save(self, export_dir, signatures={"serving_default": self.lookup})


def lookup_knowledge(cache_dir: str, user_ids, item_ids, category_ids, batch_size: int = 8192) -> np.ndarray:
    """K̂ for rows of raw string ids from a saved KnowledgeCache, in batches (as a serving client gets it)."""
    return knowledge_lookup(cache_dir)(user_ids, item_ids, category_ids, batch_size)


def knowledge_lookup(cache_dir: str):
    """The saved KnowledgeCache loaded once: a function (user_ids, item_ids, category_ids) -> K̂ rows."""
    signature = tf.saved_model.load(cache_dir).signatures["serving_default"]

    def lookup(user_ids, item_ids, category_ids, batch_size: int = 8192) -> np.ndarray:
        return _lookup(signature, user_ids, item_ids, category_ids, batch_size)

    return lookup


def _lookup(lookup, user_ids, item_ids, category_ids, batch_size: int) -> np.ndarray:
    out = []
    for s in range(0, len(user_ids), batch_size):
        res = lookup(user_id=tf.constant(np.asarray(user_ids[s:s + batch_size], dtype=bytes)),
                     item_id=tf.constant(np.asarray(item_ids[s:s + batch_size], dtype=bytes)),
                     category_id=tf.constant(np.asarray(category_ids[s:s + batch_size], dtype=bytes)))
        out.append(res["knowledge"].numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
