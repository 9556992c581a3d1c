"""GRec, the Generalist Recommender: one sparse-MoE model for all scenarios and tasks.

Paper: Efficient Multi-Task Learning via Generalist Recommender (Wang et al., CIKM '23),
section 3. A wide and deep input layer (3.1) turns the features into tokens; parallel
transformer blocks with multi-query attention (3.2, Equations 1-4) encode them; a sparse
mixture-of-experts layer with top-k gating (3.3, Equations 5-8) routes each token, each
sentence, each task or each task sentence to k of E experts; one head per task (click,
conversion, cart) reads the pooled sequence.

Token sequence of one (sample, task) "sentence", S = 4 + L tokens:
    [objective_t, scenario, item, context, hist_1 .. hist_L]
* objective_t: a learnt embedding per task (click, conversion, cart) -- the main task;
* scenario: the embedding of scenario_id -- our "flow" (the paper's EUP / AAL / NSE);
* item: the paper's "full item embedding": item id and item categorical embeddings
  (deep) concatenated with the item numerics after normalisation and a feed-forward
  layer (wide), projected to model_dim;
* context: the user / context categorical embeddings and context numerics, the same way;
* hist_l: item + category embedding of the l-th behaviour (concatenated, projected,
  plus a learnt position embedding); index 0 is padding, masked in attention, in
  pooling, and never sent to an expert.

Readings of the paper (where it is silent or ambiguous):
* Multi-task heads. The stack runs once per task, with that task's objective token (the
  T passes are batched as T x B rows, task-major), so a (sample, task) pair is the
  sentence that task-level routing routes, and the three tasks may use different experts.
  Pool = [objective token output, masked mean of all tokens]; one MLP head and one logit
  per task. Cost: T passes of the stack instead of one.
* Numeric "normalisation": the transform already writes z-scores; a BatchNormalization
  layer (identity at initialisation for z-scores) keeps them normalised as the data
  drifts, then a Dense layer maps them to embedding_dim (the "FF layer" of Figure 2).
* Parallel block (Equation 4): one LayerNorm shared by the attention and the MLP, as in
  PaLM, which Equation 4 follows (it writes LayerNorm(x) twice for the same value).
* Multi-query attention: h query heads of size model_dim / h; ONE key and ONE value
  projection of that size shared by all heads; an output projection W^O (Equation 2).
* MoE placement (the paper does not draw it): after each parallel block, as a residual
  sublayer x + MoE(LayerNorm(x)); the block keeps its dense MLP so it is exactly
  Equation 4. Experts are two-layer GELU MLPs.
* Gate inputs. token: the token itself (Eq. 5); sentence: the mean of the sentence's
  non-padding tokens at the MoE input (Eq. 6 prints "concatenating" but the formula is a
  mean; we follow the formula); task: the objective token's input embedding (Eq. 7);
  task_sentence: the mean of the scenario and objective tokens' input embeddings (Eq. 8).
  task / task_sentence gates read the special tokens' input embeddings, not their
  transformed states, so routing is a function of (task) or (scenario, task) alone,
  as task_id is "a manually set input" in Eq. 7; the router is evaluated once per distinct
  (scenario, task) in the batch.
* Top-k gate: softmax over the k largest router logits (Shazeer et al.), no noise; a
  Switch-style load-balancing loss E * sum_e f_e P_e weighted by load_balance_weight.
* Expert capacity: C = ceil(capacity_factor * k * units / E), units being real tokens
  (token routing) or (sample, task) sentences (the other routings). An expert keeps its
  C highest-gate-weight units; the units over capacity are DROPPED from that expert (they
  get nothing from it; a unit dropped by all its experts passes through the residual
  only). Capacity applies while training; at inference eval_capacity_factor applies,
  0 by default = no limit, so a served score never depends on the rest of the batch.
  The paper's "expert capacity of 2 tokens" (section 4.2) has no batch size to scale
  with, so we use the usual capacity factor. With capacity_factor >= E / k nothing can
  be dropped.
* Dispatch is sparse for every routing: an expert runs on the rows routed to it only.
  token routing gathers single tokens; sentence, task and task_sentence gather whole
  sentences (samples) per selected expert, then their non-padding rows. So the expert
  multiply-adds at inference are k x (real tokens) for all four routings; what
  task / task_sentence save is router evaluations (one per distinct (scenario, task)
  instead of one per token) and per-token routing. The paper's Table 1 halves FLOPs
  going from token to task-sentence routing, which matches token routing that runs every
  expert densely; we do not implement token routing that way to make the gap appear.
  `count_expert_flops` reports router and expert FLOPs separately.
* Default routing: task_sentence, the one the paper adopts (end of 3.3, Table 1).

Example:
    config = GRecConfig(routing="task_sentence", num_experts=4, top_k=2)
    model = GRecModel(config, vocab_sizes={"user_id": 1000, ...})
    model.compile(optimizer=tf_keras.optimizers.Adam(config.learning_rate))
    out = model(features)  # {"click", "conversion", "cart", "click_logit", ...}
    count_expert_flops(model, features)  # {"router_flops", "expert_flops", "flops", ...}
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Mapping, Optional, Tuple

import tensorflow as tf
import tf_keras

from models import features as F
from models.keep import TASK_POPULATION, TASKS, pointwise_loss
from models.multitask import MultiTaskSteps

ROUTINGS = ("token", "sentence", "task", "task_sentence")
# Routings whose unit is a whole (sample, task) sentence: all its tokens share the experts.
GROUP_ROUTINGS = ("sentence", "task", "task_sentence")


@dataclasses.dataclass(frozen=True)
class GRecConfig:
    routing: str = "task_sentence"  # paper's choice (section 3.3); one of ROUTINGS
    num_experts: int = 4  # E (paper, internal data: 8)
    top_k: int = 2  # k (paper, internal data: 4)
    capacity_factor: float = 2.0  # training; C = ceil(cf * k * units / E); <= 0: no limit
    eval_capacity_factor: float = 0.0  # inference; 0 = no limit (batch-independent scores)
    expert_units: int = 64  # hidden width of each expert MLP
    load_balance_weight: float = 0.01  # Switch-style auxiliary loss
    num_heads: int = 4  # query heads of the multi-query attention
    model_dim: int = 32  # token width
    ff_units: int = 64  # hidden width of the parallel block's dense MLP
    num_layers: int = 1  # parallel block + MoE sublayer, repeated
    embedding_dim: int = 16  # every categorical embedding before projection
    head_units: Tuple[int, ...] = (64,)  # per-task head MLP before the logit
    dropout: float = 0.0
    learning_rate: float = 1e-3
    batch_size: int = 512
    # Features (transformed names).
    scenario_feature: str = "scenario_id"
    context_features: Tuple[str, ...] = ("user_id", "user_gender", "user_age_bucket", "hour")
    context_numeric_features: Tuple[str, ...] = F.DOMAIN_STATISTICS  # equal inputs across models
    item_features: Tuple[str, ...] = ("item_id", "category_id", "shop_id")
    item_numeric_features: Tuple[str, ...] = ("item_price",)
    sequence_features: Tuple[Tuple[str, str], ...] = (("hist_item_ids", "item_id"), ("hist_category_ids", "category_id"))
    max_sequence_length: int = F.SEQUENCE_LENGTH

    def __post_init__(self):
        if self.routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {ROUTINGS}, got {self.routing!r}")
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"top_k must be in [1, num_experts={self.num_experts}], got {self.top_k}")
        if self.model_dim % self.num_heads:
            raise ValueError(f"model_dim {self.model_dim} is not a multiple of num_heads {self.num_heads}")

    def id_features(self) -> Tuple[str, ...]:
        """Every id feature with an embedding table (sequences share their target's)."""
        names = list(self.context_features) + list(self.item_features)
        names += [target for _, target in self.sequence_features]
        return tuple(dict.fromkeys(names))

    @classmethod
    def from_dict(cls, overrides: Optional[Mapping] = None) -> "GRecConfig":
        overrides = dict(overrides or {})
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown GRecConfig field(s): {sorted(unknown)}")
        for k, v in list(overrides.items()):
            if isinstance(v, list):
                overrides[k] = tuple(tuple(x) if isinstance(x, list) else x for x in v)
        return cls(**overrides)


class MultiQueryAttention(tf_keras.layers.Layer):
    """Multi-query attention: h query heads, one key and one value projection shared by all.

    Q is projected to [h, d_head] per position, K and V to [1, d_head] (section 3.2), so
    the K/V projections and the K/V activations are h times smaller than multi-head's.
    Padded key positions get no attention weight.

    Example:
        mqa = MultiQueryAttention(num_heads=4, head_dim=8, output_dim=32)
        y = mqa(x, padding_mask)  # [B, S, D], [B, S] bool -> [B, S, 32]
    """

    def __init__(self, num_heads: int, head_dim: int, output_dim: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.output_dim = output_dim
        self.dropout = dropout
        self.query = tf_keras.layers.Dense(num_heads * head_dim, use_bias=False, name="query")
        self.key = tf_keras.layers.Dense(head_dim, use_bias=False, name="key")  # shared by every head
        self.value = tf_keras.layers.Dense(head_dim, use_bias=False, name="value")  # shared by every head
        self.output_projection = tf_keras.layers.Dense(output_dim, use_bias=False, name="output")  # W^O
        self.drop = tf_keras.layers.Dropout(dropout)

    def call(self, x, padding_mask=None, training=None):
        batch, length = tf.shape(x)[0], tf.shape(x)[1]
        q = tf.reshape(self.query(x), [batch, length, self.num_heads, self.head_dim])
        k, v = self.key(x), self.value(x)
        scores = tf.einsum("bshd,btd->bhst", q, k) / math.sqrt(self.head_dim)  # Eq. 1
        if padding_mask is not None:
            # -1e9 rather than -inf: a fully padded row must not produce NaN.
            scores += (1.0 - tf.cast(padding_mask, scores.dtype))[:, None, None, :] * -1e9
        weights = self.drop(tf.nn.softmax(scores, axis=-1), training=training)
        heads = tf.einsum("bhst,btd->bshd", weights, v)
        return self.output_projection(tf.reshape(heads, [batch, length, self.num_heads * self.head_dim]))  # Eq. 2

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "head_dim": self.head_dim,
                "output_dim": self.output_dim, "dropout": self.dropout}


class ParallelTransformerBlock(tf_keras.layers.Layer):
    """y = x + MLP(LN(x)) + Attention(LN(x)) (Equation 4), one LN shared by both branches.

    Example:
        block = ParallelTransformerBlock(model_dim=32, num_heads=4, ff_units=64)
        y = block(x, padding_mask)  # [B, S, 32] -> [B, S, 32]
    """

    def __init__(self, model_dim: int, num_heads: int, ff_units: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.model_dim = model_dim
        self.num_heads = num_heads
        self.ff_units = ff_units
        self.dropout = dropout
        self.norm = tf_keras.layers.LayerNormalization(epsilon=1e-6, name="norm")
        self.attention = MultiQueryAttention(num_heads, model_dim // num_heads, model_dim, dropout, name="attention")
        self.mlp_in = tf_keras.layers.Dense(ff_units, activation="gelu", name="mlp_in")
        self.mlp_out = tf_keras.layers.Dense(model_dim, name="mlp_out")
        self.drop = tf_keras.layers.Dropout(dropout)

    def call(self, x, padding_mask=None, training=None):
        h = self.norm(x)
        mlp = self.drop(self.mlp_out(self.mlp_in(h)), training=training)
        attention = self.drop(self.attention(h, padding_mask, training=training), training=training)
        return x + mlp + attention  # Eq. 4

    def get_config(self):
        return {**super().get_config(), "model_dim": self.model_dim, "num_heads": self.num_heads,
                "ff_units": self.ff_units, "dropout": self.dropout}


class SparseMoE(tf_keras.layers.Layer):
    """Sparse mixture of E expert MLPs with top-k gating, capacity and four routings.

    `call(x, padding_mask, route=None, route_keys=None)`:
    * x [G, S, D] tokens of G sentences, padding_mask [G, S] bool (False = padding);
    * route [G, D]: the gate input of each sentence for `task` / `task_sentence` routing
      (the model passes the special tokens' embeddings); ignored by `token` (each token
      gates itself) and `sentence` (the mean of the sentence's tokens);
    * route_keys [G] int: equal keys mean equal route rows, so the router runs once per
      distinct key (optional).
    Returns the combined expert outputs [G, S, D] (0 for padding and for units dropped by
    every expert). Pass `stats=[]` to receive a dict per call: the routed units' experts
    [units, k], rows each expert ran on, router evaluations and multiply-adds.

    Example:
        moe = SparseMoE(num_experts=4, top_k=2, expert_units=64, routing="task")
        y = moe(x, padding_mask, route=task_embeddings)
    """

    def __init__(self, num_experts: int = 4, top_k: int = 2, expert_units: int = 64, routing: str = "task_sentence",
                 capacity_factor: float = 2.0, eval_capacity_factor: float = 0.0, load_balance_weight: float = 0.01,
                 **kwargs):
        super().__init__(**kwargs)
        if routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {ROUTINGS}, got {routing!r}")
        self.num_experts = num_experts
        self.top_k = top_k
        self.expert_units = expert_units
        self.routing = routing
        self.capacity_factor = capacity_factor
        self.eval_capacity_factor = eval_capacity_factor
        self.load_balance_weight = load_balance_weight
        self.router = tf_keras.layers.Dense(num_experts, name="router")

    def build(self, input_shape):
        d, e, h = int(input_shape[-1]), self.num_experts, self.expert_units
        # One stacked tensor per parameter so expert e is a slice, not a separate layer.
        self.kernel_in = self.add_weight(name="expert_kernel_in", shape=[e, d, h], initializer="glorot_uniform")
        self.bias_in = self.add_weight(name="expert_bias_in", shape=[e, h], initializer="zeros")
        self.kernel_out = self.add_weight(name="expert_kernel_out", shape=[e, h, d], initializer="glorot_uniform")
        self.bias_out = self.add_weight(name="expert_bias_out", shape=[e, d], initializer="zeros")
        super().build(input_shape)

    def expert(self, e: int, rows):
        """Expert e on [n, D] rows -> [n, D]."""
        hidden = tf.nn.gelu(tf.matmul(rows, self.kernel_in[e]) + self.bias_in[e])
        return tf.matmul(hidden, self.kernel_out[e]) + self.bias_out[e]

    def _gate_logits(self, route, route_keys):
        if route_keys is None:
            return self.router(route), tf.shape(route)[0]
        unique, index = tf.unique(route_keys)
        first = tf.math.unsorted_segment_min(tf.range(tf.shape(route_keys)[0]), index, tf.size(unique))
        return tf.gather(self.router(tf.gather(route, first)), index), tf.size(unique)

    def _select(self, logits, training):
        """Top-k experts per unit, then capacity: [(units, weights) per expert], experts [n, k]."""
        top_logits, experts = tf.math.top_k(logits, k=self.top_k)
        weights = tf.nn.softmax(top_logits, axis=-1)  # renormalised over the k chosen experts
        units = tf.shape(logits)[0]
        factor = self.capacity_factor if training else self.eval_capacity_factor
        capacity = None
        if factor and factor > 0:
            capacity = tf.cast(tf.math.ceil(factor * self.top_k * tf.cast(units, tf.float32) / self.num_experts),
                               tf.int32)
        assignments = []
        for e in range(self.num_experts):
            where = tf.where(tf.equal(experts, e))  # [n, 2]: (unit, slot); top-k never repeats an expert
            unit, weight = where[:, 0], tf.gather_nd(weights, where)
            if capacity is not None:
                # Over capacity: keep the highest gate weights (ties: earlier units), drop the rest.
                keep = tf.math.top_k(weight, k=tf.minimum(capacity, tf.size(weight))).indices
                unit, weight = tf.gather(unit, keep), tf.gather(weight, keep)
            assignments.append((unit, weight))
        if self.load_balance_weight:
            # Switch Transformer's auxiliary loss over the routed units.
            fraction = tf.reduce_mean(tf.reduce_sum(tf.one_hot(experts, self.num_experts), 1), 0) / self.top_k
            probability = tf.reduce_mean(tf.nn.softmax(logits, -1), 0)
            self.add_loss(self.load_balance_weight * self.num_experts * tf.reduce_sum(fraction * probability))
        return experts, assignments, capacity

    def call(self, x, padding_mask, route=None, route_keys=None, training=None, stats: Optional[list] = None):
        d = tf.shape(x)[-1]
        rows_run = []
        if self.routing == "token":
            flat = tf.reshape(x, [-1, d])
            positions = tf.where(tf.reshape(padding_mask, [-1]))[:, 0]
            tokens = tf.gather(flat, positions)  # real tokens only: padding never reaches an expert
            logits, evaluations = self.router(tokens), tf.shape(tokens)[0]  # Eq. 5
            experts, assignments, capacity = self._select(logits, training)
            combined = tf.zeros_like(tokens)
            for e, (unit, weight) in enumerate(assignments):
                y = self.expert(e, tf.gather(tokens, unit)) * weight[:, None]
                combined = tf.tensor_scatter_nd_add(combined, unit[:, None], y)
                rows_run.append(tf.size(unit))
            out = tf.reshape(tf.scatter_nd(positions[:, None], combined, tf.shape(flat, out_type=tf.int64)),
                             tf.shape(x))
        else:
            if self.routing == "sentence":
                m = tf.cast(padding_mask, x.dtype)[..., None]
                route = tf.math.divide_no_nan(tf.reduce_sum(x * m, 1), tf.reduce_sum(m, 1))  # Eq. 6
                route_keys = None
            elif route is None:
                raise ValueError(f"{self.routing} routing needs `route` (the task tokens)")
            logits, evaluations = self._gate_logits(route, route_keys)  # Eq. 7 / Eq. 8
            experts, assignments, capacity = self._select(logits, training)
            out = tf.zeros_like(x)
            for e, (unit, weight) in enumerate(assignments):
                # Gather the sentences routed to e, then only their real tokens.
                mask = tf.gather(padding_mask, unit)
                where = tf.where(mask)  # [m, 2]: (row in the gathered sentences, position)
                rows = tf.gather_nd(tf.gather(x, unit), where)
                y = self.expert(e, rows) * tf.gather(weight, where[:, 0])[:, None]
                target = tf.stack([tf.gather(unit, where[:, 0]), where[:, 1]], axis=1)
                out = tf.tensor_scatter_nd_add(out, target, y)
                rows_run.append(tf.shape(rows)[0])
        if stats is not None:
            rows_run = tf.stack(rows_run)
            d64 = tf.cast(d, tf.int64)
            kept = tf.add_n([tf.size(u) for u, _ in assignments])
            stats.append({
                "routing": self.routing,
                "experts": experts,  # [units, k]
                "units": tf.shape(experts)[0],
                "capacity": capacity,
                "dropped_slots": tf.shape(experts)[0] * self.top_k - kept,
                "expert_rows": rows_run,  # [E]: rows each expert actually ran on
                "router_evaluations": evaluations,
                "router_macs": tf.cast(evaluations, tf.int64) * d64 * self.num_experts,
                "expert_macs": tf.cast(tf.reduce_sum(rows_run), tf.int64) * 2 * d64 * self.expert_units,
            })
        return out

    def get_config(self):
        return {**super().get_config(), "num_experts": self.num_experts, "top_k": self.top_k,
                "expert_units": self.expert_units, "routing": self.routing,
                "capacity_factor": self.capacity_factor, "eval_capacity_factor": self.eval_capacity_factor,
                "load_balance_weight": self.load_balance_weight}


class GRecModel(MultiTaskSteps, tf_keras.Model):
    """GRec: wide and deep tokens, parallel transformer + sparse MoE layers, one head per task.

    `call(features)` returns per-task probabilities and `<task>_logit` logits.
    `moe_stats(features)` runs the same forward pass and returns each MoE layer's routing
    statistics (see `SparseMoE`).
    """

    CONFIG_CLASS = GRecConfig

    def __init__(self, config: GRecConfig, vocab_sizes: Mapping[str, int], **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.vocab_sizes = dict(vocab_sizes)
        c = config
        self.embeddings = {
            name: tf_keras.layers.Embedding(self.vocab_sizes[name], c.embedding_dim, name=f"embedding_{name}")
            for name in c.id_features()
        }
        # Special tokens live directly in model_dim: they are also the task-level gate inputs.
        self.scenario_embedding = tf_keras.layers.Embedding(
            self.vocab_sizes[c.scenario_feature], c.model_dim, name="scenario_token")
        self.objective_embedding = tf_keras.layers.Embedding(len(TASKS), c.model_dim, name="objective_token")
        self.position_embedding = tf_keras.layers.Embedding(c.max_sequence_length, c.model_dim, name="position")
        self.numeric = {}
        for side, names in (("context", c.context_numeric_features), ("item", c.item_numeric_features)):
            if names:
                self.numeric[side] = (tf_keras.layers.BatchNormalization(name=f"{side}_numeric_norm"),
                                      tf_keras.layers.Dense(c.embedding_dim, activation="relu",
                                                            name=f"{side}_numeric_ff"))
        self.context_projection = tf_keras.layers.Dense(c.model_dim, name="context_token")
        self.item_projection = tf_keras.layers.Dense(c.model_dim, name="item_token")
        self.history_projection = tf_keras.layers.Dense(c.model_dim, name="history_token")
        self.blocks = [ParallelTransformerBlock(c.model_dim, c.num_heads, c.ff_units, c.dropout, name=f"block_{i}")
                       for i in range(c.num_layers)]
        self.moe_norms = [tf_keras.layers.LayerNormalization(epsilon=1e-6, name=f"moe_norm_{i}")
                          for i in range(c.num_layers)]
        self.moes = [SparseMoE(c.num_experts, c.top_k, c.expert_units, c.routing, c.capacity_factor,
                               c.eval_capacity_factor, c.load_balance_weight, name=f"moe_{i}")
                     for i in range(c.num_layers)]
        self.final_norm = tf_keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")
        self.heads = {t: [tf_keras.layers.Dense(u, activation="relu", name=f"head_{t}_{i}")
                          for i, u in enumerate(c.head_units)] + [tf_keras.layers.Dense(1, name=f"head_{t}_logit")]
                      for t in TASKS}
        self.head_drop = tf_keras.layers.Dropout(c.dropout)
        self.loss_tracker = tf_keras.metrics.Mean(name="loss")
        self.auc = {t: tf_keras.metrics.AUC(name=f"auc_{t}") for t in TASKS}

    # Section 3.1: wide and deep input layer.
    def _side_token(self, features, side, id_names, numeric_names, projection, training):
        parts = [self.embeddings[n](features[n]) for n in id_names]  # deep
        if numeric_names:
            norm, ff = self.numeric[side]
            values = tf.stack([tf.reshape(tf.cast(features[n], tf.float32), [-1]) for n in numeric_names], -1)
            parts.append(ff(norm(values, training=training)))  # wide: normalisation + FF layer
        return projection(tf.concat(parts, -1))

    def _shared_tokens(self, features, training):
        """[scenario, item, context, hist_1..L] tokens [B, 3 + L, D] and their mask."""
        c = self.config
        scenario = self.scenario_embedding(features[c.scenario_feature])
        item = self._side_token(features, "item", c.item_features, c.item_numeric_features,
                                self.item_projection, training)
        context = self._side_token(features, "context", c.context_features, c.context_numeric_features,
                                   self.context_projection, training)
        tokens = [scenario[:, None], item[:, None], context[:, None]]
        mask = [tf.ones_like(features[c.scenario_feature], tf.bool)[:, None]] * 3
        if c.sequence_features:
            parts, seq_mask = [], None
            for seq_name, target in c.sequence_features:
                ids = features[seq_name]
                parts.append(self.embeddings[target](ids))
                seq_mask = ids > 0 if seq_mask is None else seq_mask | (ids > 0)
            history = self.history_projection(tf.concat(parts, -1))
            history += self.position_embedding(tf.range(tf.shape(history)[1]))[None]
            tokens.append(history)
            mask.append(seq_mask)
        return tf.concat(tokens, 1), tf.concat(mask, 1), scenario

    def _forward(self, features, training=None, stats: Optional[list] = None):
        c = self.config
        shared, shared_mask, scenario = self._shared_tokens(features, training)
        batch, n_tasks = tf.shape(shared)[0], len(TASKS)
        # One sentence per (task, sample), task-major: rows t*B .. (t+1)*B-1 are task t.
        task_ids = tf.repeat(tf.range(n_tasks), batch)
        objective = self.objective_embedding(task_ids)  # [T*B, D]
        x = tf.concat([objective[:, None], tf.tile(shared, [n_tasks, 1, 1])], 1)
        mask = tf.concat([tf.ones([n_tasks * batch, 1], tf.bool), tf.tile(shared_mask, [n_tasks, 1])], 1)
        route, keys = None, None
        if c.routing == "task":
            route, keys = objective, task_ids  # Eq. 7
        elif c.routing == "task_sentence":
            route = (tf.tile(scenario, [n_tasks, 1]) + objective) / 2.0  # Eq. 8: mean of the task tokens
            scenario_ids = tf.tile(tf.cast(features[c.scenario_feature], tf.int64), [n_tasks])
            keys = scenario_ids * n_tasks + tf.cast(task_ids, tf.int64)
        for block, norm, moe in zip(self.blocks, self.moe_norms, self.moes):
            x = block(x, padding_mask=mask, training=training)
            x = x + moe(norm(x), padding_mask=mask, route=route, route_keys=keys, training=training, stats=stats)
        x = self.final_norm(x)
        m = tf.cast(mask, x.dtype)[..., None]
        pooled = tf.concat([x[:, 0], tf.reduce_sum(x * m, 1) / tf.reduce_sum(m, 1)], -1)
        logits = {}
        for i, t in enumerate(TASKS):
            h = pooled[i * batch:(i + 1) * batch]
            for layer in self.heads[t][:-1]:
                h = self.head_drop(layer(h), training=training)
            logits[t] = tf.squeeze(self.heads[t][-1](h), -1)
        return logits

    def call(self, features, training=None):
        logits = self._forward(features, training=training)
        out = {t: tf.sigmoid(logits[t]) for t in TASKS}
        out.update({f"{t}_logit": logits[t] for t in TASKS})
        return out

    def moe_stats(self, features, training=False) -> List[dict]:
        """Each MoE layer's routing statistics for one forward pass (eager)."""
        stats: list = []
        self._forward(features, training=training, stats=stats)
        return stats

    def compute_losses(self, features, outputs):
        total = 0.0
        for t in TASKS:
            labels = tf.cast(features[t], tf.float32)
            gate = TASK_POPULATION[t]
            pop = None if gate is None else tf.cast(features[gate], tf.float32)
            total += pointwise_loss(labels, outputs[f"{t}_logit"], pop)
        return total + tf.add_n(self.losses) if self.losses else total

def count_expert_flops(model: GRecModel, features, training: bool = False) -> Dict[str, int]:
    """Multiply-adds the MoE layers actually execute on `features`, as FLOPs (2 per MAC).

    router_flops: router evaluations x D x E; expert_flops: rows each expert ran on x
    2 x D x H (two matmuls; biases and GELU not counted). The rest of the model does not
    depend on the routing and is not counted. Measured at inference by default, where no
    capacity limit drops rows, so routings are compared on the same work.
    """
    stats = model.moe_stats(features, training=training)
    router = sum(int(s["router_macs"]) for s in stats)
    expert = sum(int(s["expert_macs"]) for s in stats)
    return {
        "routing": model.config.routing,
        "router_flops": 2 * router,
        "expert_flops": 2 * expert,
        "flops": 2 * (router + expert),
        "router_evaluations": sum(int(s["router_evaluations"]) for s in stats),
        "expert_rows": sum(int(tf.reduce_sum(s["expert_rows"])) for s in stats),
        "dropped_slots": sum(int(s["dropped_slots"]) for s in stats),
    }
