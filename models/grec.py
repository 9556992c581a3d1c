"""GRec, the Generalist Recommender: one sparse-MoE model for all scenarios and tasks.

Paper: Efficient Multi-Task Learning via Generalist Recommender (Wang et al., CIKM '23),
section 3, Figures 1-3. The structure follows the paper:

    behaviour sequence --parallel transformer (3.2)--> sequence vector --+
    ids + numerics -----wide and deep layer (3.1)----> embeddings -------+--> concat u
    u --task-sentence MoE of MLP experts (3.3)--> one head per task (click, conversion, cart)

* Section 3.1 (wide and deep): every categorical id (user and context ids incl.
  scenario_id; item id and item categoricals) is embedded (deep); the numerics of each
  side are normalised and passed through a feed-forward layer of the embedding width
  (wide). Context numerics are the domain statistics F.DOMAIN_STATISTICS that every
  unified model and baseline reads (equal inputs); the item numeric is item_price.
  The parts are concatenated as they are ("concatenated to form a full item embedding").
* Section 3.2 (parallel transformer): runs over the behaviour sequence ONLY, one token
  per position (hist_item_ids and hist_category_ids embeddings concatenated, projected to
  model_dim, plus a learnt position embedding); index 0 is padding, masked as a key.
* Section 3.3 (task-sentence MoE): u, the concatenation of the sequence vector and the
  wide and deep embeddings, goes through a sparse MoE of E MLP experts with top-k
  gating; the gate input depends on the routing (Equations 5-8); one MLP head per task
  reads the MoE output of its (sample, task) row.
* Section 4.2: E = 8 experts, top-4 (Figure 4: AUC rises with both); task upsampling
  ("training data are upsampled by tasks to ensure data balance"), see below.

Readings of the paper (where it is silent or ambiguous) and deviations:
* Target item. The paper encodes the sequences with the transformer and concatenates the
  item's full embedding beside them; it never puts the target item into the transformer
  (neither as a token nor as a query), and it does not say how the sequence output
  becomes one vector. Default `sequence_pooling="mean"`: the masked mean of the
  transformer outputs h_l, no target involved. Option "target" (a deviation): one
  read-out softmax(q . h_l / sqrt(d)) over the real positions, q a linear map of the
  target item's id and category embeddings; the transformer still never sees the target.
  It did not help on the quality benchmark (docs/benchmarks.md, quality findings).
* Multi-query attention (Eq. 2): W^Q, W^K, W^V are d x d with d the latent width, so a
  head is head_dim = model_dim wide (not model_dim / h); h query heads, ONE key and ONE
  value projection shared by them, an output projection W^O from h * d to model_dim.
* Parallel block (Eq. 4): one LayerNorm shared by attention and MLP, as in PaLM.
* Experts: MLPs (ReLU) of expert_units = (128, 64), the width of MMoE's experts in
  models/baselines.py so the two are comparable; heads: (32,) then a logit, like the
  baselines' towers.
* Units and gate inputs. One routed unit per (sample, task) row, all with the same
  input u, for the routings whose gate depends on the task; token routing gates on u,
  which the tasks of a sample share, so its unit is the sample (routed once, the heads
  differ). The routing tokens (a scenario embedding, i.e. the flow, and an objective
  embedding per task, i.e. the use case) have the width of u and are gate inputs only.
  token: GATE(u) (Eq. 5); sentence: GATE(mean of the sentence [u, scenario, objective])
  (Eq. 6 prints "concatenating" but the formula is a mean; we follow the formula);
  task: GATE(objective) (Eq. 7); task_sentence: GATE(mean(scenario, objective)) (Eq. 8).
  task / task_sentence routing is thus a function of the task or the (scenario, task)
  only; the router runs once per distinct key in a batch.
* Top-k gate: softmax over the k largest router logits (Shazeer et al.), no noise.
* Load balancing: the paper has none. A Switch-style auxiliary loss
  load_balance_weight * E * sum_e f_e P_e is available, OFF by default (weight 0): with
  task and task-sentence routing a unit is a (scenario, task), so the loss would push the
  routing of the tasks by their traffic volume rather than by what they need.
* Capacity: the paper's "expert capacity of 2 tokens" (4.2) is kept as an option,
  capacity_factor (C = ceil(cf * k * units / E); an expert keeps its C highest-weight
  units, the rest get nothing from it), but OFF by default (0, a deviation): with
  task-sentence routing an expert's load is the traffic of the (scenario, task) pairs
  that pick it, so a capacity would drop rows of the big scenarios while training only,
  a train / serve mismatch. eval_capacity_factor (0 = none) keeps served scores
  independent of the batch.
* Task upsampling (4.2, `task_upsampling`, default OFF, a deviation): a "task" is a
  (scenario, task) pair (the paper's (flow, use case)). Upsampling a pair's rows by a factor w equals weighting its loss terms by w
  in each task's weighted mean loss, which is what we do (the input pipeline is shared by
  every model): w = min(max_upsampling, N_max(task) / N(scenario, task)), N counted over
  the task's training population (all rows for click; clicked rows for conversion and
  cart) seen so far (non-trainable `task_counts`, updated each train step), N_max the
  largest scenario's count for that task. Each task's loss already is a mean over its
  own population, so the use cases are balanced by construction; upsampling balances
  the scenarios within a task. max_upsampling = 10 caps the weight of tiny pairs (the
  paper gives no cap). Off by default because on our data it moves weight away from the
  traffic the model is judged on and hardly moves the minor scenarios it upweights
  (docs/benchmarks.md, quality findings).
* Serving (Task-MoE, the paper's reference [10]): with task-sentence routing, the
  experts and their weights of a (scenario, task) are fixed, so `extract_subnetwork`
  builds, per (scenario, task), a model with only those k experts (weights copied),
  no router, the shared encoder and that task's head; it predicts exactly like the
  full model for that (scenario, task). Its parameters are <= (k / E) of the MoE's plus
  the rest (bench/grec.py reports counts and batch-1 latency).
* FLOPs: expert rows are k per unit. Token routing runs its k experts once per sample;
  the task-dependent routings once per (sample, task) row of the full model (T x k rows
  per sample) -- the saving of task-sentence routing is in serving one (scenario, task)
  with k experts, not in the full model. `count_expert_flops` reports router and expert
  FLOPs separately.

Example:
    config = GRecConfig(routing="task_sentence", num_experts=8, top_k=4)
    model = GRecModel(config, vocab_sizes={"user_id": 1000, ...})
    model.compile(optimizer=tf_keras.optimizers.Adam(config.learning_rate))
    out = model(features)  # {"click", "conversion", "cart", "click_logit", ...}
    sub = extract_subnetwork(model, scenario_id=3, task="click")
    sub(features)  # {"click", "click_logit"}, as the full model for scenario 3
    count_expert_flops(model, features)  # {"router_flops", "expert_flops", "flops", ...}
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from models import features as F
from models.multitask import TASK_POPULATION, TASKS, MultiTaskSteps, task_metrics
from models.configs import DROPOUT, EMBEDDING_DIM, LEARNING_RATE, Choice, FromDict

ROUTINGS = ("token", "sentence", "task", "task_sentence")
# Routings whose gate depends on the task: one unit per (sample, task) row.
TASK_ROUTINGS = ("sentence", "task", "task_sentence")
POOLINGS = ("mean", "target")


@dataclasses.dataclass(frozen=True)
class GRecConfig(FromDict):
    routing: str = "task_sentence"  # paper's choice (section 3.3); one of ROUTINGS
    num_experts: int = 8  # E (paper 4.2: 8)
    top_k: int = 4  # k (paper 4.2: top-4)
    capacity_factor: float = 0.0  # training; C = ceil(cf * k * units / E); <= 0: no limit (deviation)
    eval_capacity_factor: float = 0.0  # inference; 0 = no limit (batch-independent scores)
    expert_units: Tuple[int, ...] = (128, 64)  # each expert MLP (ReLU); MMoE's expert width
    load_balance_weight: float = 0.0  # Switch-style auxiliary loss; not in the paper, off
    num_heads: int = 4  # query heads of the multi-query attention
    model_dim: int = 32  # sequence token width
    head_dim: int = 32  # width of a head and of the shared K / V (Eq. 2: d x d projections)
    ff_units: int = 64  # hidden width of the parallel block's dense MLP
    num_layers: int = 1  # parallel transformer blocks
    sequence_pooling: str = "mean"  # one of POOLINGS; the paper puts no target in the sequence encoder
    embedding_dim: int = 16  # every categorical embedding; numerics' FF output width
    head_units: Tuple[int, ...] = (32,)  # per-task head MLP before the logit
    task_upsampling: bool = False  # section 4.2, as loss weights per (scenario, task)
    max_upsampling: float = 10.0  # cap of an upsampling factor (paper: none)
    dropout: float = 0.0
    learning_rate: float = 3e-3  # bench/results/learning_rate.json
    batch_size: int = 512
    # Features (transformed names).
    scenario_feature: str = "scenario_id"
    context_features: Tuple[str, ...] = ("user_id", "user_gender", "user_age_bucket", "hour", "scenario_id")
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
        if self.sequence_pooling not in POOLINGS:
            raise ValueError(f"sequence_pooling must be one of {POOLINGS}, got {self.sequence_pooling!r}")
        if not self.sequence_features:
            raise ValueError("GRec needs a behaviour sequence (sequence_features)")

    def id_features(self) -> Tuple[str, ...]:
        """Every id feature with an embedding table (sequences share their target's)."""
        names = list(self.context_features) + list(self.item_features)
        names += [target for _, target in self.sequence_features]
        return tuple(dict.fromkeys(names))


@tf_keras.utils.register_keras_serializable(package="grec")
class MultiQueryAttention(tf_keras.layers.Layer):
    """Multi-query attention: h query heads, one key and one value projection shared by all.

    Q is projected to [h, d] per position, K and V to [1, d] (section 3.2), d = head_dim.
    Padded key positions get no attention weight.

    Args:
        num_heads: h. head_dim: d. output_dim: width of W^O's output. dropout: on the weights.
    Shapes:
        x [B, S, D], padding_mask [B, S] bool (False = padding) -> [B, S, output_dim].
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


@tf_keras.utils.register_keras_serializable(package="grec")
class ParallelTransformerBlock(tf_keras.layers.Layer):
    """y = x + MLP(LN(x)) + Attention(LN(x)) (Equation 4), one LN shared by both branches.

    Args:
        model_dim: token width D. num_heads, head_dim: the multi-query attention's.
        ff_units: hidden width of the MLP. dropout: on both branches.
    Shapes:
        x [B, S, D], padding_mask [B, S] bool -> [B, S, D].
    """

    def __init__(self, model_dim: int, num_heads: int, ff_units: int, dropout: float = 0.0,
                 head_dim: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self.model_dim = model_dim
        self.num_heads = num_heads
        self.ff_units = ff_units
        self.dropout = dropout
        self.head_dim = head_dim or model_dim
        self.norm = tf_keras.layers.LayerNormalization(epsilon=1e-6, name="norm")
        self.attention = MultiQueryAttention(num_heads, self.head_dim, model_dim, dropout, name="attention")
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
                "ff_units": self.ff_units, "dropout": self.dropout, "head_dim": self.head_dim}


@tf_keras.utils.register_keras_serializable(package="grec")
class GRecInput(tf_keras.layers.Layer):
    """Sections 3.1 and 3.2: the concatenation u = [sequence vector, deep embeddings, wide outputs].

    Args:
        vocab_sizes: {id feature: table size}. id_features: ids embedded (deep), in order.
        numeric_groups: ((name, (numeric features)), ...): each group normalised, then a
            ReLU feed-forward layer to embedding_dim (wide).
        sequence_features: ((sequence, target id feature), ...): one transformer token per
            position from the sequences' embeddings (each shares its target's table).
        embedding_dim, model_dim, num_heads, head_dim, ff_units, num_layers, dropout: sizes.
        max_sequence_length: positions of the position embedding.
        sequence_pooling: "mean" (masked mean) or "target" (read-out queried by the target ids).
    Shapes:
        features {name: [B] or [B, L]} -> [B, output_dim].
    """

    def __init__(self, vocab_sizes: Mapping[str, int], id_features: Sequence[str],
                 numeric_groups: Sequence[Tuple[str, Sequence[str]]], sequence_features: Sequence[Tuple[str, str]],
                 embedding_dim: int = 16, model_dim: int = 32, num_heads: int = 4, head_dim: int = 32,
                 ff_units: int = 64, num_layers: int = 1, max_sequence_length: int = F.SEQUENCE_LENGTH,
                 sequence_pooling: str = "mean", dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.vocab_sizes = {n: int(v) for n, v in vocab_sizes.items()}
        self.id_features = tuple(id_features)
        self.numeric_groups = tuple((side, tuple(names)) for side, names in numeric_groups if names)
        self.sequence_features = tuple(tuple(s) for s in sequence_features)
        self.embedding_dim, self.model_dim = embedding_dim, model_dim
        self.num_heads, self.head_dim = num_heads, head_dim
        self.ff_units, self.num_layers, self.max_sequence_length = ff_units, num_layers, max_sequence_length
        self.sequence_pooling, self.dropout = sequence_pooling, dropout
        tables = list(dict.fromkeys(list(self.id_features) + [t for _, t in self.sequence_features]))
        self.embeddings = {n: tf_keras.layers.Embedding(self.vocab_sizes[n], embedding_dim, name=f"embedding_{n}")
                           for n in tables}
        self.numeric = {side: (tf_keras.layers.BatchNormalization(name=f"{side}_numeric_norm"),
                               tf_keras.layers.Dense(embedding_dim, activation="relu", name=f"{side}_numeric_ff"))
                        for side, _ in self.numeric_groups}
        self.history_projection = tf_keras.layers.Dense(model_dim, name="history_token")
        self.position_embedding = tf_keras.layers.Embedding(max_sequence_length, model_dim, name="position")
        self.blocks = [ParallelTransformerBlock(model_dim, num_heads, ff_units, dropout, head_dim, name=f"block_{i}")
                       for i in range(num_layers)]
        self.sequence_norm = tf_keras.layers.LayerNormalization(epsilon=1e-6, name="sequence_norm")
        self.target_query = tf_keras.layers.Dense(model_dim, use_bias=False, name="target_query")

    @property
    def output_dim(self) -> int:
        return self.model_dim + self.embedding_dim * (len(self.id_features) + len(self.numeric_groups))

    def encode_sequence(self, features, training=None):
        """Section 3.2: transformer outputs [B, L, model_dim] of the sequence tokens, and their mask [B, L]."""
        parts, mask = [], None
        for seq_name, target in self.sequence_features:
            ids = features[seq_name]
            parts.append(self.embeddings[target](ids))
            mask = ids > 0 if mask is None else mask | (ids > 0)
        x = self.history_projection(tf.concat(parts, -1))
        x += self.position_embedding(tf.range(tf.shape(x)[1]))[None]
        for block in self.blocks:
            x = block(x, padding_mask=mask, training=training)  # Eq. 4
        return self.sequence_norm(x), mask

    def pool(self, features, states, mask):
        """The sequence vector [B, model_dim] from the transformer outputs."""
        m = tf.cast(mask, states.dtype)
        if self.sequence_pooling == "mean":
            return tf.math.divide_no_nan(tf.reduce_sum(states * m[..., None], 1), tf.reduce_sum(m, 1, keepdims=True))
        target = tf.concat([self.embeddings[t](features[t]) for _, t in self.sequence_features], -1)
        q = self.target_query(target)  # the target item reads the sequence; it is not a token
        scores = tf.einsum("bd,bld->bl", q, states) / math.sqrt(self.model_dim) + (1.0 - m) * -1e9
        weights = tf.nn.softmax(scores, -1) * tf.reduce_max(m, 1, keepdims=True)  # empty history -> 0
        return tf.einsum("bl,bld->bd", weights, states)

    def call(self, features, training=None):
        states, mask = self.encode_sequence(features, training)
        parts = [self.pool(features, states, mask)]
        parts += [self.embeddings[n](features[n]) for n in self.id_features]  # deep
        for side, names in self.numeric_groups:
            norm, ff = self.numeric[side]
            values = tf.stack([tf.reshape(tf.cast(features[n], tf.float32), [-1]) for n in names], -1)
            parts.append(ff(norm(values, training=training)))  # wide: normalisation + FF layer
        return tf.concat(parts, -1)

    def get_config(self):
        return {**super().get_config(), "vocab_sizes": self.vocab_sizes, "id_features": self.id_features,
                "numeric_groups": self.numeric_groups, "sequence_features": self.sequence_features,
                "embedding_dim": self.embedding_dim, "model_dim": self.model_dim, "num_heads": self.num_heads,
                "head_dim": self.head_dim, "ff_units": self.ff_units, "num_layers": self.num_layers,
                "max_sequence_length": self.max_sequence_length, "sequence_pooling": self.sequence_pooling,
                "dropout": self.dropout}


def _expert_forward(kernels, biases, rows):
    """An MLP expert (ReLU on every layer) on [n, D] rows."""
    for kernel, bias in zip(kernels, biases):
        rows = tf.nn.relu(tf.matmul(rows, kernel) + bias)
    return rows


@tf_keras.utils.register_keras_serializable(package="grec")
class SparseMoE(tf_keras.layers.Layer):
    """Sparse mixture of E MLP experts with top-k gating and an optional capacity.

    `call(x, route=None, route_keys=None)`: unit n's gate input is route[n] (x[n] if
    None); equal route_keys mean equal route rows, so the router runs once per distinct
    key. Each unit runs on its k experts only (sparse dispatch); the outputs are combined
    with the softmax of the k largest router logits. Units over an expert's capacity get
    nothing from it. Pass `stats=[]` to receive a dict per call: the units' experts
    [units, k], rows each expert ran on, router evaluations and multiply-adds.

    Args:
        num_experts: E. top_k: k. expert_units: each expert MLP's layer widths.
        capacity_factor / eval_capacity_factor: C = ceil(cf * k * units / E) while
            training / at inference; <= 0: no limit.
        load_balance_weight: weight of E * sum_e f_e P_e (Switch Transformer), f_e the
            share of the units' k slots that went to e, P_e the mean router probability
            of e; 0 = no auxiliary loss.
    Shapes:
        x [N, D], route [N, R], route_keys [N] int -> [N, expert_units[-1]].
    """

    def __init__(self, num_experts: int = 8, top_k: int = 4, expert_units: Sequence[int] = (128, 64),
                 capacity_factor: float = 0.0, eval_capacity_factor: float = 0.0, load_balance_weight: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_experts = num_experts
        self.top_k = top_k
        self.expert_units = tuple(int(u) for u in expert_units)
        self.capacity_factor = capacity_factor
        self.eval_capacity_factor = eval_capacity_factor
        self.load_balance_weight = load_balance_weight
        self.router = tf_keras.layers.Dense(num_experts, name="router")

    def build(self, input_shape):
        widths = [int(input_shape[-1])] + list(self.expert_units)
        # One stacked tensor per parameter so expert e is a slice, not a separate layer.
        self.kernels = [self.add_weight(name=f"expert_kernel_{i}", shape=[self.num_experts, a, b],
                                        initializer="glorot_uniform")
                        for i, (a, b) in enumerate(zip(widths, widths[1:]))]
        self.biases = [self.add_weight(name=f"expert_bias_{i}", shape=[self.num_experts, b], initializer="zeros")
                       for i, b in enumerate(widths[1:])]
        super().build(input_shape)

    def expert(self, e: int, rows):
        """Expert e on [n, D] rows -> [n, expert_units[-1]]."""
        return _expert_forward([k[e] for k in self.kernels], [b[e] for b in self.biases], rows)

    def gate_logits(self, route, route_keys=None):
        """Router logits [N, E] and the number of router evaluations."""
        if route_keys is None:
            return self.router(route), tf.shape(route)[0]
        unique, index = tf.unique(route_keys)
        first = tf.math.unsorted_segment_min(tf.range(tf.shape(route_keys)[0]), index, tf.size(unique))
        return tf.gather(self.router(tf.gather(route, first)), index), tf.size(unique)

    def select(self, logits, training=None):
        """Top-k experts [n, k] and per expert its (units, weights) after capacity; the capacity."""
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
        return experts, assignments, capacity

    def load_balance_loss(self, logits, experts):
        """E * sum_e f_e P_e over the units (Switch Transformer), unweighted."""
        fraction = tf.reduce_mean(tf.reduce_sum(tf.one_hot(experts, self.num_experts), 1), 0) / self.top_k
        probability = tf.reduce_mean(tf.nn.softmax(logits, -1), 0)
        return self.num_experts * tf.reduce_sum(fraction * probability)

    def call(self, x, route=None, route_keys=None, training=None, stats: Optional[list] = None):
        logits, evaluations = self.gate_logits(x if route is None else route, route_keys)  # Eq. 5-8
        experts, assignments, capacity = self.select(logits, training)
        if self.load_balance_weight:
            self.add_loss(self.load_balance_weight * self.load_balance_loss(logits, experts))
        out = tf.zeros([tf.shape(x)[0], self.expert_units[-1]], x.dtype)
        rows_run = []
        for e, (unit, weight) in enumerate(assignments):
            y = self.expert(e, tf.gather(x, unit)) * weight[:, None]
            out = tf.tensor_scatter_nd_add(out, unit[:, None], y)
            rows_run.append(tf.size(unit))
        if stats is not None:
            rows_run = tf.stack(rows_run)
            widths = [int(x.shape[-1])] + list(self.expert_units)
            per_row = sum(a * b for a, b in zip(widths, widths[1:]))
            kept = tf.add_n([tf.size(u) for u, _ in assignments])
            stats.append({
                "experts": experts,  # [units, k]
                "units": tf.shape(experts)[0],
                "capacity": capacity,
                "dropped_slots": tf.shape(experts)[0] * self.top_k - kept,
                "expert_rows": rows_run,  # [E]: rows each expert actually ran on
                "router_evaluations": evaluations,
                "router_macs": tf.cast(evaluations, tf.int64) * int(logits.shape[-1]) * (
                    int((x if route is None else route).shape[-1])),
                "expert_macs": tf.cast(tf.reduce_sum(rows_run), tf.int64) * per_row,
            })
        return out

    def get_config(self):
        return {**super().get_config(), "num_experts": self.num_experts, "top_k": self.top_k,
                "expert_units": self.expert_units, "capacity_factor": self.capacity_factor,
                "eval_capacity_factor": self.eval_capacity_factor, "load_balance_weight": self.load_balance_weight}


class GRecModel(MultiTaskSteps, tf_keras.Model):
    """GRec: sequence transformer + wide and deep embeddings, a sparse MoE, one head per task.

    `call(features)` returns per-task probabilities and `<task>_logit` logits.
    `moe_stats(features)` runs the same forward pass and returns the MoE layer's routing
    statistics (a one-element list, see `SparseMoE`). `route(scenario_id, task)` gives
    the experts and weights task-sentence routing picks for that pair.
    """

    CONFIG_CLASS = GRecConfig
    # The Tuner's: rate, width, dropout, the routing (section 3.3) and the experts E (top_k = 4 <= E).
    SEARCH_SPACE = {"learning_rate": LEARNING_RATE, "embedding_dim": EMBEDDING_DIM, "dropout": DROPOUT,
                    "routing": Choice(*ROUTINGS), "num_experts": Choice(4, 8, 16)}

    def __init__(self, config: GRecConfig, vocab_sizes: Mapping[str, int], **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.vocab_sizes = dict(vocab_sizes)
        c = config
        self.encoder = GRecInput(
            self.vocab_sizes, c.context_features + c.item_features,
            (("context", c.context_numeric_features), ("item", c.item_numeric_features)), c.sequence_features,
            c.embedding_dim, c.model_dim, c.num_heads, c.head_dim, c.ff_units, c.num_layers,
            c.max_sequence_length, c.sequence_pooling, c.dropout, name="encoder")
        width = self.encoder.output_dim
        # Routing tokens (gate inputs only), as wide as u so a sentence of them can be averaged (Eq. 6).
        self.scenario_token = tf_keras.layers.Embedding(self.vocab_sizes[c.scenario_feature], width,
                                                        name="scenario_token")
        self.objective_token = tf_keras.layers.Embedding(len(TASKS), width, name="objective_token")
        self.moe = SparseMoE(c.num_experts, c.top_k, c.expert_units, c.capacity_factor, c.eval_capacity_factor,
                             c.load_balance_weight, name="moe")
        self.heads = {t: [tf_keras.layers.Dense(u, activation="relu", name=f"head_{t}_{i}")
                          for i, u in enumerate(c.head_units)] + [tf_keras.layers.Dense(1, name=f"head_{t}_logit")]
                      for t in TASKS}
        self.head_drop = tf_keras.layers.Dropout(c.dropout)
        # Training population seen so far per (scenario, task), for task upsampling (section 4.2).
        self.task_counts = self.add_weight(name="task_counts", shape=[self.vocab_sizes[c.scenario_feature], len(TASKS)],
                                           initializer="zeros", trainable=False)
        self.loss_tracker, self.auc = task_metrics()

    @property
    def moes(self):  # one MoE layer; a list for callers that iterate
        return [self.moe]

    def head(self, task: str, h, training=None):
        for layer in self.heads[task][:-1]:
            h = self.head_drop(layer(h), training=training)
        return tf.squeeze(self.heads[task][-1](h), -1)

    def _forward(self, features, training=None, stats: Optional[list] = None):
        c = self.config
        u = self.encoder(features, training=training)  # [B, width]
        batch, n_tasks = tf.shape(u)[0], len(TASKS)
        if c.routing == "token":
            y = self.moe(u, training=training, stats=stats)  # Eq. 5: one unit per sample
            return {t: self.head(t, y, training) for t in TASKS}
        # One unit per (task, sample), task-major: rows t*B .. (t+1)*B-1 are task t.
        task_ids = tf.repeat(tf.range(n_tasks), batch)
        objective = self.objective_token(task_ids)
        scenario_ids = tf.tile(tf.cast(features[c.scenario_feature], tf.int64), [n_tasks])
        scenario = self.scenario_token(scenario_ids)
        x = tf.tile(u, [n_tasks, 1])
        keys = None
        if c.routing == "sentence":
            route = (x + scenario + objective) / 3.0  # Eq. 6
        elif c.routing == "task":
            route, keys = objective, task_ids  # Eq. 7
        else:
            route = (scenario + objective) / 2.0  # Eq. 8
            keys = scenario_ids * n_tasks + tf.cast(task_ids, tf.int64)
        y = self.moe(x, route=route, route_keys=keys, training=training, stats=stats)
        return {t: self.head(t, y[i * batch:(i + 1) * batch], training) for i, t in enumerate(TASKS)}

    def call(self, features, training=None):
        logits = self._forward(features, training=training)
        out = {t: tf.sigmoid(logits[t]) for t in TASKS}
        out.update({f"{t}_logit": logits[t] for t in TASKS})
        return out

    def moe_stats(self, features, training=False) -> List[dict]:
        """The MoE layer's routing statistics for one forward pass (eager)."""
        stats: list = []
        self._forward(features, training=training, stats=stats)
        return stats

    def route(self, scenario_id: int, task: str) -> Tuple[np.ndarray, np.ndarray]:
        """(experts [k] ascending, weights [k]) task-sentence routing picks for (scenario, task)."""
        if self.config.routing != "task_sentence":
            raise ValueError(f"fixed routes need task_sentence routing, not {self.config.routing!r}")
        s = self.scenario_token(tf.constant([scenario_id], tf.int64))
        o = self.objective_token(tf.constant([TASKS.index(task)]))
        logits, _ = self.moe.gate_logits((s + o) / 2.0)  # Eq. 8
        top_logits, experts = tf.math.top_k(logits, k=self.moe.top_k)
        weights = tf.nn.softmax(top_logits, -1)
        order = np.argsort(experts.numpy()[0])
        return experts.numpy()[0][order], weights.numpy()[0][order]

    # Section 4.2: task upsampling, as loss weights per (scenario, task).
    def count_tasks(self, features):
        c = self.config
        scenario = tf.cast(features[c.scenario_feature], tf.int32)
        counts = []
        for t in TASKS:
            gate = TASK_POPULATION[t]
            pop = tf.ones_like(scenario, tf.float32) if gate is None else tf.cast(features[gate], tf.float32)
            counts.append(tf.math.unsorted_segment_sum(pop, scenario, self.vocab_sizes[c.scenario_feature]))
        self.task_counts.assign_add(tf.stack(counts, 1))

    def upsampling_weights(self, features, task: str):
        """Per row: min(max_upsampling, N_max(task) / N(scenario, task)); 1 before any count."""
        counts = self.task_counts[:, TASKS.index(task)]
        n = tf.gather(counts, tf.cast(features[self.config.scenario_feature], tf.int32))
        w = tf.where(n > 0, tf.math.divide_no_nan(tf.reduce_max(counts), n), 1.0)
        return tf.minimum(w, self.config.max_upsampling) if self.config.max_upsampling > 0 else w

    def train_step(self, data):
        if self.config.task_upsampling:
            self.count_tasks(data)
        return super().train_step(data)

    def task_weights(self, features, task):
        weights = super().task_weights(features, task)
        if not self.config.task_upsampling:
            return weights
        up = self.upsampling_weights(features, task)  # weighted mean = mean over upsampled rows
        return up if weights is None else weights * up


@tf_keras.utils.register_keras_serializable(package="grec")
class FixedExperts(tf_keras.layers.Layer):
    """The k experts one (scenario, task) is routed to, with their fixed gate weights.

    Args:
        widths: (input width, expert layer widths...). weights: the k gate weights, in
            the order of the experts (ascending expert index, as the full MoE adds them).
    Shapes:
        x [B, D] -> [B, widths[-1]]: sum_j weights[j] * expert_j(x).
    """

    def __init__(self, widths: Sequence[int], weights: Sequence[float], **kwargs):
        super().__init__(**kwargs)
        self.widths = tuple(int(w) for w in widths)
        self.gate_weights = tuple(float(w) for w in weights)
        k = len(self.gate_weights)
        self.kernels = [self.add_weight(name=f"expert_kernel_{i}", shape=[k, a, b], initializer="zeros")
                        for i, (a, b) in enumerate(zip(self.widths, self.widths[1:]))]
        self.biases = [self.add_weight(name=f"expert_bias_{i}", shape=[k, b], initializer="zeros")
                       for i, b in enumerate(self.widths[1:])]

    def call(self, x):
        out = tf.zeros([tf.shape(x)[0], self.widths[-1]], x.dtype)
        for j, w in enumerate(self.gate_weights):  # same order and arithmetic as SparseMoE.call
            y = _expert_forward([k[j] for k in self.kernels], [b[j] for b in self.biases], x)
            out = out + y * tf.constant(w, x.dtype)
        return out

    def get_config(self):
        return {**super().get_config(), "widths": self.widths, "weights": self.gate_weights}


class GRecSubNetwork(tf_keras.Model):
    """One (scenario, task) of a task-sentence GRec: the shared encoder, its k experts, its head.

    Built by `extract_subnetwork`; `call(features)` returns {task, task_logit}, equal to
    the full model's for rows of that scenario (other scenarios' rows would need other
    experts). The encoder and head layers are the full model's (shared variables).
    """

    def __init__(self, encoder: GRecInput, experts: FixedExperts, head: List[tf_keras.layers.Layer],
                 scenario_id: int, task: str, expert_ids: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.encoder, self.experts, self.head_layers = encoder, experts, list(head)
        self.scenario_id, self.task, self.expert_ids = int(scenario_id), task, tuple(int(e) for e in expert_ids)

    def call(self, features, training=None):
        h = self.experts(self.encoder(features, training=training))
        for layer in self.head_layers:
            h = layer(h)
        logit = tf.squeeze(h, -1)
        return {self.task: tf.sigmoid(logit), f"{self.task}_logit": logit}


def extract_subnetwork(model: GRecModel, scenario_id: int, task: str) -> GRecSubNetwork:
    """The sub-network serving (scenario_id, task) of a task-sentence GRec (Task-MoE style extraction).

    The route of a (scenario, task) does not depend on the input (Eq. 8), so its k experts
    and their weights are fixed: they are copied out of the stacked MoE weights; the router,
    the other E - k experts, the routing tokens and the other tasks' heads are left out.
    """
    if not model.moe.built:
        raise ValueError("call the model once before extracting a sub-network")
    expert_ids, weights = model.route(scenario_id, task)
    widths = [model.encoder.output_dim] + list(model.moe.expert_units)
    experts = FixedExperts(widths, weights, name="experts")
    for mine, full in zip(experts.kernels + experts.biases, model.moe.kernels + model.moe.biases):
        mine.assign(tf.gather(full, expert_ids))
    return GRecSubNetwork(model.encoder, experts, model.heads[task], scenario_id, task, expert_ids,
                          name=f"grec_{scenario_id}_{task}")


def count_params(layer_or_model) -> int:
    """Trainable parameters (each shared variable once)."""
    seen = {id(v): v for v in layer_or_model.trainable_variables}
    return int(sum(np.prod(v.shape) for v in seen.values()))


def count_expert_flops(model: GRecModel, features, training: bool = False) -> Dict[str, int]:
    """Multiply-adds the MoE layer actually executes on `features`, as FLOPs (2 per MAC).

    router_flops: router evaluations x R x E (R the gate input width); expert_flops: rows
    each expert ran on x the expert MLP's multiply-adds per row (biases and activations
    not counted). The rest of the model does not depend on the routing and is not
    counted. By default at inference, where no capacity limit drops rows.
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
