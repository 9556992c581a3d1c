"""PEPNet: Parameter and Embedding Personalized Network (Chang et al., KDD 2023, section 2).

Scenarios are the paper's domains; click, conversion and add-to-cart its tasks.

* Gate NU (2.2.1, Equations 2-3): x' = ReLU(x W + b); delta = gamma * sigmoid(x' W' + b').
  With gamma = 2 the gates lie in (0, 2) and start near 1, so they can both damp and
  amplify a unit.
* EPNet (2.2.2, Equations 4-6): E is the concatenation of the general feature
  embeddings; delta_domain = U_ep(E(F_d) + stop_gradient(E)) and O_ep = delta_domain * E,
  where F_d are the domain-side features: the scenario id and per-scenario statistics.
* PPNet (2.2.3, Equations 7-9): O_prior = E(user) + E(item) + E(author); per tower layer l,
  delta_task^(l) = U_pp^(l)(O_prior + stop_gradient(O_ep)) is split into one slice per task
  and scales that task's hidden units element-wise before the next layer.
* Training (2.3, offline training strategy): embedding tables can be updated by one
  optimizer and every other ("DNN") parameter by another; see `PEPNetModel.train_step`
  (both Adam by default, see "Optimizers" below).

Readings where the paper leaves a choice:
* "+" above is concatenation. E holds the general features only (user, item, category,
  shop, gender, age, hour, price and the mean-pooled histories); the scenario id is a
  domain-side feature and reaches the towers only through the EPNet gate. Put
  "scenario_id" in `general_features` to also give it to the backbone (it then shares
  the table with F_d).
* Domain-side statistics are the numeric features `domain_numeric_features`
  (default `user_scenario_exposures`, `item_scenario_exposures`), concatenated raw since
  they arrive normalised. Those absent from `features` are skipped, so the model runs
  before the transform provides them; the Gate NU's input width is fixed by the first
  call, so a model keeps the feature set it was built with (a later call with a
  different set raises a ValueError, as a retrained model is needed anyway).
* Gates are element-wise over E (delta_domain in R^e, as the paper states), not one
  scalar per feature field; numeric inputs in E get their own gate unit.
* The author is the shop; the PPNet priors share their tables with E (the paper draws
  both from the one embedding layer), so the priors train through PPNet's gates while
  O_ep does not (stop_gradient, Equation 7).
* Equation 9 gates H^(l) for l = 1..L, the inputs of all L tower layers. We gate the
  output of every hidden layer (which is the input of the next one, the logit layer
  included) and, with `gate_tower_input` (default, the literal reading where H^(1) is
  the tower input O_ep), also the tower input, per task. One Gate NU per gated layer
  produces the gates of all tasks at once (delta_task^(l) in R^{h x T}).
* The width of the Gate NU's hidden layer x' is not given; `gate_hidden_units`
  defaults to the gate's output width.
* The tower ends in a plain sigmoid (no gamma); we return the logit too, as the loss
  takes logits. Conversion and cart are trained over clicked impressions only.
* Optimizers: 2.3 gives Adagrad 0.05 for embeddings and Adam 5e-6 for the DNN in
  online (streaming) learning; its offline experiments (3.1.3), which this pipeline
  is, use Adam 1e-3 for every model. The defaults follow 3.1.3's Adam for both, at
  3e-3 as for every model here, so PEPNet and the baselines train with the same
  optimizer; the two-optimizer machinery stays
  (`embedding_optimizer="adagrad"`, `embedding_learning_rate=0.05`).

Example:
    config = PEPNetConfig(tower_units=(128, 64, 32))
    model = PEPNetModel(config, vocab_sizes={"user_id": 1000, "item_id": 5000, ...})
    model.compile()  # the embedding and dense optimizers from the config
    model.fit(dataset)
    out = model(features)  # {"click", "conversion", "cart", "click_logit", ...}
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import tensorflow as tf
import tf_keras

from models import features as F
from models.multitask import TASKS, MultiTaskSteps
from models.configs import EMBEDDING_DIM, LEARNING_RATE, Choice, FromDict


@dataclasses.dataclass(frozen=True)
class PEPNetConfig(FromDict):
    embedding_dim: int = 16  # paper 3.4: EPNet is robust down to 16
    # E: general features (transformed names); sequences are mean-pooled.
    general_features: Tuple[str, ...] = (
        "user_id", "item_id", "category_id", "shop_id", "user_gender", "user_age_bucket", "hour", "item_price",
        "hist_item_ids", "hist_category_ids",
    )
    # F_d: domain-side features (EPNet input).
    domain_id_features: Tuple[str, ...] = ("scenario_id",)
    domain_numeric_features: Tuple[str, ...] = ("user_scenario_exposures", "item_scenario_exposures")
    # O_prior: user / item / author side (PPNet input); the shop is the author.
    prior_features: Tuple[str, ...] = ("user_id", "item_id", "shop_id")
    tower_units: Tuple[int, ...] = (128, 64, 32)
    gamma: float = 2.0  # paper 3.4: best at 2
    gate_hidden_units: Optional[int] = None  # None: the gate's output width
    gate_tower_input: bool = True  # Equation 9 with H^(1) = tower input
    # Paper 3.1.3 (offline experiments): Adam 1e-3 for every model; 3e-3 here, as for the other models
    # (bench/results/learning_rate.json). 2.3's Adagrad 0.05 for embeddings is its online-learning
    # strategy; set "adagrad" / 0.05 to use it.
    embedding_optimizer: str = "adam"
    embedding_learning_rate: float = 3e-3
    dense_optimizer: str = "adam"  # paper 2.3 / 3.1.3
    dense_learning_rate: float = 3e-3  # paper 3.1.3 (offline) 1e-3; 2.3 uses 5e-6 online
    batch_size: int = 1024  # paper 3.1.3

    def __post_init__(self):
        numeric = set(F.NUMERIC_FEATURES)
        bad = [n for n in self.domain_id_features + self.prior_features if n in numeric or n in F.SEQUENCE_FEATURES]
        if bad:
            raise ValueError(f"domain_id_features / prior_features must be id features, got {bad}")

    def id_features(self) -> Tuple[str, ...]:
        """Every id or sequence feature the model embeds (the names whose vocabulary sizes it needs)."""
        names = [n for n in self.general_features if n not in F.NUMERIC_FEATURES]
        names += list(self.domain_id_features) + list(self.prior_features)
        return tuple(dict.fromkeys(names))

    def embedding_tables(self) -> Tuple[str, ...]:
        """One table per vocabulary: a history shares its target's table."""
        return tuple(dict.fromkeys(F.VOCABULARY.get(n, n) for n in self.id_features()))


class GateNU(tf_keras.layers.Layer):
    """Gate Neural Unit: prior information -> personalised gates in (0, gamma).

    Example:
        gate = GateNU(units=32, gamma=2.0)
        delta = gate(x)  # [B, any] -> [B, 32]
    """

    def __init__(self, units: int, gamma: float = 2.0, hidden_units: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.gamma = float(gamma)
        self.hidden_units = None if hidden_units is None else int(hidden_units)
        self.hidden = tf_keras.layers.Dense(self.hidden_units or self.units, activation="relu", name="hidden")
        self.out = tf_keras.layers.Dense(self.units, name="out")

    def call(self, x):
        x = self.hidden(x)  # Equation 2
        return self.gamma * tf.sigmoid(self.out(x))  # Equation 3

    def get_config(self):
        return {**super().get_config(), "units": self.units, "gamma": self.gamma, "hidden_units": self.hidden_units}


class EPNet(tf_keras.layers.Layer):
    """Embedding Personalized Network: `[domain_input, E] -> (delta_domain, O_ep)`.

    The gate's width is E's, known when the layer is built.
    """

    def __init__(self, gamma: float = 2.0, hidden_units: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self.gamma = float(gamma)
        self.hidden_units = hidden_units

    def build(self, input_shape):
        _, general_shape = input_shape
        self.gate = GateNU(int(general_shape[-1]), self.gamma, self.hidden_units, name="gate_ep")
        super().build(input_shape)

    def domain_gate(self, domain, general):
        # The gate reads E but must not train it: E's tables learn from the backbone only.
        return self.gate(tf.concat([domain, tf.stop_gradient(general)], axis=-1))  # Equation 5

    def call(self, inputs):
        domain, general = inputs
        delta = self.domain_gate(domain, general)
        return delta, delta * general  # Equation 6

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "hidden_units": self.hidden_units}


class PPNet(tf_keras.layers.Layer):
    """Parameter Personalized Network: gated task towers, `[O_prior, O_ep] -> {task: logit}`.

    `gates` returns, per gated layer (bottom to top), {task: delta slice}; `towers` runs
    the towers under given gates, so callers can inspect or alter them.
    """

    def __init__(self, tasks: Sequence[str] = TASKS, tower_units: Sequence[int] = (128, 64, 32), gamma: float = 2.0,
                 gate_hidden_units: Optional[int] = None, gate_tower_input: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.tasks = tuple(tasks)
        self.tower_units = tuple(int(u) for u in tower_units)
        self.gamma = float(gamma)
        self.gate_hidden_units = gate_hidden_units
        self.gate_tower_input = bool(gate_tower_input)
        self.hidden = {
            t: [tf_keras.layers.Dense(u, activation="relu", name=f"{t}_hidden_{i}") for i, u in enumerate(self.tower_units)]
            for t in self.tasks
        }
        self.logit = {t: tf_keras.layers.Dense(1, name=f"{t}_logit") for t in self.tasks}

    def build(self, input_shape):
        _, ep_shape = input_shape
        widths = ([int(ep_shape[-1])] if self.gate_tower_input else []) + list(self.tower_units)
        # One Gate NU per layer emits the gates of all tasks together (delta_task^(l) in R^{h x T}).
        self.gate_widths = tuple(widths)
        self.gates_nu = [
            GateNU(w * len(self.tasks), self.gamma, self.gate_hidden_units, name=f"gate_pp_{i}")
            for i, w in enumerate(widths)
        ]
        super().build(input_shape)

    def gates(self, prior, o_ep) -> List[Dict[str, tf.Tensor]]:
        # stop_gradient: the task gates must not pull EPNet's output (and E) towards them.
        x = tf.concat([prior, tf.stop_gradient(o_ep)], axis=-1)  # Equation 7
        return [dict(zip(self.tasks, tf.split(nu(x), len(self.tasks), axis=-1))) for nu in self.gates_nu]

    def towers(self, o_ep, gates: Sequence[Mapping[str, tf.Tensor]]) -> Dict[str, tf.Tensor]:
        logits = {}
        for t in self.tasks:
            layer_gates = iter(g[t] for g in gates)
            h = o_ep * next(layer_gates) if self.gate_tower_input else o_ep  # Equation 9, l = 1
            for dense in self.hidden[t]:
                h = dense(h) * next(layer_gates)  # Equations 8-9
            logits[t] = tf.squeeze(self.logit[t](h), -1)
        return logits

    def call(self, inputs):
        prior, o_ep = inputs
        return self.towers(o_ep, self.gates(prior, o_ep))

    def get_config(self):
        return {**super().get_config(), "tasks": self.tasks, "tower_units": self.tower_units, "gamma": self.gamma,
                "gate_hidden_units": self.gate_hidden_units, "gate_tower_input": self.gate_tower_input}


def make_optimizer(name: str, learning_rate: float) -> tf_keras.optimizers.Optimizer:
    """An optimizer by Keras name ("adagrad", "adam", ...) with the given learning rate."""
    # By name, not by a config dict: tf_keras turns a bare config dict into a legacy optimizer.
    return type(tf_keras.optimizers.get(name))(learning_rate=learning_rate)


class PEPNetModel(MultiTaskSteps, tf_keras.Model):
    """PEPNet over shared embeddings; `call` returns per-task probabilities and logits.

    Two optimizers (paper 2.3): `compile()` builds `embedding_optimizer` (Adam by
    default, 3.1.3) for the embedding tables and `optimizer` (Adam by default, the "DNN"
    optimizer: towers and gates) for everything else, from the config; passing
    `optimizer=` / `embedding_optimizer=` overrides either. `train_step` computes one
    gradient and hands each optimizer its own variables.
    """

    CONFIG_CLASS = PEPNetConfig
    # The Tuner's: both optimizers' rates, the width, and the gates' range gamma (no regulariser to search:
    # the config has none).
    SEARCH_SPACE = {"dense_learning_rate": LEARNING_RATE, "embedding_learning_rate": LEARNING_RATE,
                    "embedding_dim": EMBEDDING_DIM, "gamma": Choice(1.0, 2.0, 3.0)}

    def __init__(self, config: PEPNetConfig, vocab_sizes: Mapping[str, int], **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.vocab_sizes = {n: int(v) for n, v in vocab_sizes.items()}
        self.embeddings = {}
        for table in config.embedding_tables():
            size = self._vocab_size(table)
            self.embeddings[table] = tf_keras.layers.Embedding(size, config.embedding_dim, name=f"embedding_{table}")
        self.epnet = EPNet(config.gamma, config.gate_hidden_units, name="epnet")
        self.ppnet = PPNet(TASKS, config.tower_units, config.gamma, config.gate_hidden_units, config.gate_tower_input,
                           name="ppnet")
        self.embedding_optimizer = None
        self._domain_numerics = None  # the domain-side statistics present at build time
        self.loss_tracker = tf_keras.metrics.Mean(name="loss")
        self.auc = {t: tf_keras.metrics.AUC(name=f"auc_{t}") for t in TASKS}

    def _vocab_size(self, table: str) -> int:
        if table in self.vocab_sizes:
            return self.vocab_sizes[table]
        for name in self.config.id_features():  # a history may come keyed by its own name
            if F.VOCABULARY.get(name, name) == table and name in self.vocab_sizes:
                return self.vocab_sizes[name]
        raise KeyError(f"no vocabulary size for embedding table {table!r}")

    def _embed(self, name, features):
        table = self.embeddings[F.VOCABULARY.get(name, name)]
        ids = features[name]
        if name in F.SEQUENCE_FEATURES:
            mask = tf.cast(ids > 0, tf.float32)[..., None]
            return tf.reduce_sum(table(ids) * mask, 1) / tf.maximum(tf.reduce_sum(mask, 1), 1.0)
        return table(ids)

    @staticmethod
    def _numeric(name, features):
        return tf.reshape(tf.cast(features[name], tf.float32), [-1, 1])

    def general_embedding(self, features):
        """E (Equation 4): the general features, embedded and concatenated."""
        parts = [self._numeric(n, features) if n in F.NUMERIC_FEATURES else self._embed(n, features)
                 for n in self.config.general_features]
        return tf.concat(parts, axis=-1)

    def domain_input(self, features):
        """E(F_d): the domain id embeddings and the domain-side statistics present in `features`."""
        present = tuple(n for n in self.config.domain_numeric_features if n in features)
        if self._domain_numerics is None:
            self._domain_numerics = present
        elif present != self._domain_numerics:
            raise ValueError(f"PEPNet was built with domain statistics {list(self._domain_numerics)}, "
                             f"called with {list(present)}")
        parts = [self._embed(n, features) for n in self.config.domain_id_features]
        parts += [self._numeric(n, features) for n in present]
        return tf.concat(parts, axis=-1)

    def prior_input(self, features):
        """O_prior (Equation 7): user, item and author (shop) embeddings."""
        return tf.concat([self._embed(n, features) for n in self.config.prior_features], axis=-1)

    def personalize(self, features):
        """(O_prior, delta_domain, O_ep) for a batch: what the towers and their gates read."""
        delta_domain, o_ep = self.epnet([self.domain_input(features), self.general_embedding(features)])
        return self.prior_input(features), delta_domain, o_ep

    def call(self, features, training=None):
        prior, _, o_ep = self.personalize(features)
        logits = self.ppnet([prior, o_ep])
        out = {t: tf.sigmoid(logits[t]) for t in TASKS}
        out.update({f"{t}_logit": logits[t] for t in TASKS})
        return out

    # --- training -----------------------------------------------------------------

    def compile(self, optimizer=None, embedding_optimizer=None, **kwargs):
        cfg = self.config
        dense = optimizer if optimizer is not None else make_optimizer(cfg.dense_optimizer, cfg.dense_learning_rate)
        super().compile(optimizer=dense, **kwargs)
        if embedding_optimizer is None:
            embedding_optimizer = make_optimizer(cfg.embedding_optimizer, cfg.embedding_learning_rate)
        self.embedding_optimizer = tf_keras.optimizers.get(embedding_optimizer)

    @property
    def dense_optimizer(self):
        return self.optimizer

    @property
    def embedding_variables(self):
        return [v for layer in self.embeddings.values() for v in layer.trainable_variables]

    def split_variables(self):
        """(embedding variables, every other trainable variable)."""
        emb = {v.ref() for v in self.embedding_variables}
        variables = self.trainable_variables
        return [v for v in variables if v.ref() in emb], [v for v in variables if v.ref() not in emb]

    def train_step(self, data):
        features = data
        with tf.GradientTape() as tape:
            outputs = self(features, training=True)
            loss = self.compute_losses(features, outputs)
        emb_vars, dense_vars = self.split_variables()
        grads = tape.gradient(loss, emb_vars + dense_vars)
        # Paper 2.3: embeddings (sparse, updated often) and DNN parameters (dense, to be
        # updated stably) get different optimizers.
        self.embedding_optimizer.apply_gradients(zip(grads[:len(emb_vars)], emb_vars))
        self.optimizer.apply_gradients(zip(grads[len(emb_vars):], dense_vars))
        return self._update_metrics(features, outputs, loss)
