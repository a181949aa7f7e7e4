"""The split model: a bottom network per party and a multi-task top, MMoE or PLE.

Ma et al. 2018, "Modeling Task Relationships in Multi-task Learning with Multi-gate
Mixture-of-Experts": K shared experts, one softmax gate per task over the experts, one tower per
task. Tang et al. 2020, "Progressive Layered Extraction (PLE)": besides shared experts each task
has its own, over levels of such extraction, so tasks that conflict need not share every expert.
Either top reads the concatenation of every party's cut-layer output h_p.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from splitrec_core.config import ModelConfig


@keras.saving.register_keras_serializable(package="splitrec")
class Bottom(keras.layers.Layer):
    """One party's network over its own columns.

    Args:
        vocab_sizes: embedding table size per categorical column (index 0 = unknown).
        num_numeric: number of numeric columns.
        embedding_dim: width of each categorical embedding.
        units: hidden layer widths.
        cut_dim: width of the output h_p that crosses the cut.
        clip_norm: if > 0, each row of h_p is scaled to L2 norm at most this (bounds what one
            person's embedding can carry, the precondition for calibrated noise).
        **kwargs: Args to pass to the base class.

    Call args: `[cats int32 [batch, n_cat], nums float32 [batch, n_num]]`; returns
    `[batch, cut_dim]`.
    """

    def __init__(
        self, vocab_sizes: Sequence[int], num_numeric: int, embedding_dim: int,
        units: Sequence[int], cut_dim: int, clip_norm: float = 0.0, **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.vocab_sizes = list(vocab_sizes)
        self.num_numeric = num_numeric
        self.embedding_dim = embedding_dim
        self.units = list(units)
        self.cut_dim = cut_dim
        self.clip_norm = clip_norm
        # All categorical columns share one table at per-column offsets: one gather per batch
        # instead of one per column (the bottom runs twice per step in split training).
        self.offsets = [sum(self.vocab_sizes[:j]) for j in range(len(self.vocab_sizes))]
        self.embedding = (keras.layers.Embedding(sum(self.vocab_sizes), embedding_dim,
                                                 name="embedding")
                          if self.vocab_sizes else None)
        self.hidden = [keras.layers.Dense(u, activation="relu", name=f"hidden_{j}")
                       for j, u in enumerate(self.units)]
        self.cut = keras.layers.Dense(cut_dim, activation="relu", name="cut")

    def build(self, input_shape: object) -> None:
        """Build sublayers for the concatenated input width."""
        width = len(self.vocab_sizes) * self.embedding_dim + self.num_numeric
        if self.embedding is not None:
            self.embedding.build((None, len(self.vocab_sizes)))
        for layer in self.hidden:
            layer.build((None, width))
            width = layer.units
        self.cut.build((None, width))

    def call(self, inputs: Sequence[tf.Tensor]) -> tf.Tensor:
        """Embed, concatenate and run the MLP."""
        cats, nums = inputs
        parts = []
        if self.embedding is not None:
            embedded = self.embedding(cats + keras.ops.convert_to_tensor(self.offsets, "int32"))
            parts.append(keras.ops.reshape(embedded,
                                           (-1, len(self.vocab_sizes) * self.embedding_dim)))
        if self.num_numeric:
            parts.append(nums)
        x = keras.ops.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
        for layer in self.hidden:
            x = layer(x)
        h = self.cut(x)
        if self.clip_norm > 0:
            norm = keras.ops.sqrt(keras.ops.sum(h * h, axis=-1, keepdims=True) + 1e-12)
            h = h * keras.ops.minimum(1.0, self.clip_norm / norm)
        return h

    def get_config(self) -> dict[str, object]:
        """Return the constructor arguments."""
        return {**super().get_config(), "vocab_sizes": self.vocab_sizes,
                "num_numeric": self.num_numeric, "embedding_dim": self.embedding_dim,
                "units": self.units, "cut_dim": self.cut_dim, "clip_norm": self.clip_norm}


@keras.saving.register_keras_serializable(package="splitrec")
class MMoE(keras.layers.Layer):
    """Experts shared by all tasks, a softmax gate and a tower per task.

    Args:
        num_tasks: number of binary tasks.
        num_experts: number of experts K.
        expert_units: width of each expert.
        tower_units: hidden width of each task tower.
        **kwargs: Args to pass to the base class.

    Call args: `x [batch, d]`; returns logits `[batch, num_tasks]`.
    """

    def __init__(
        self, num_tasks: int, num_experts: int, expert_units: int, tower_units: int,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.num_tasks = num_tasks
        self.num_experts = num_experts
        self.expert_units = expert_units
        self.tower_units = tower_units
        # All experts as one kernel: one matmul instead of K small ones.
        self.experts = keras.layers.Dense(num_experts * expert_units, activation="relu",
                                          name="experts")
        self.gates = [keras.layers.Dense(num_experts, activation="softmax", name=f"gate_{t}")
                      for t in range(num_tasks)]
        self.towers = [keras.layers.Dense(tower_units, activation="relu", name=f"tower_{t}")
                       for t in range(num_tasks)]
        self.heads = [keras.layers.Dense(1, name=f"head_{t}") for t in range(num_tasks)]

    def build(self, input_shape: tuple[int | None, int]) -> None:
        """Build experts, gates and towers for input width `input_shape[-1]`."""
        self.experts.build(input_shape)
        for gate, tower, head in zip(self.gates, self.towers, self.heads, strict=True):
            gate.build(input_shape)
            tower.build((None, self.expert_units))
            head.build((None, self.tower_units))

    def call(self, x: tf.Tensor) -> tf.Tensor:
        """Mix the experts per task and return one logit per task."""
        experts = keras.ops.reshape(self.experts(x), (-1, self.num_experts, self.expert_units))
        logits = []
        for gate, tower, head in zip(self.gates, self.towers, self.heads, strict=True):
            mixed = keras.ops.einsum("bk,bku->bu", gate(x), experts)
            logits.append(head(tower(mixed)))
        return keras.ops.concatenate(logits, axis=-1)

    def gate_weights(self, x: tf.Tensor) -> tf.Tensor:
        """Each task's gate output `[num_tasks, batch, num_experts]`, for reporting expert use."""
        return keras.ops.stack([gate(x) for gate in self.gates])

    def get_config(self) -> dict[str, object]:
        """Return the constructor arguments."""
        return {**super().get_config(), "num_tasks": self.num_tasks,
                "num_experts": self.num_experts, "expert_units": self.expert_units,
                "tower_units": self.tower_units}


@keras.saving.register_keras_serializable(package="splitrec")
class PLE(keras.layers.Layer):
    """Levels of shared and task-specific experts, with gates per task, then a tower per task.

    Each level (a CGC) has, per task, `task_experts` experts and a softmax gate over them and the
    level's `num_experts` shared experts; the gate's output is the task's input to the next
    level. Every level but the last also has a shared gate over all its experts, whose output is
    the next level's shared input. At the first level every input is `x`.

    Args:
        num_tasks: number of binary tasks.
        num_experts: shared experts per level.
        expert_units: width of each expert.
        tower_units: hidden width of each task tower.
        task_experts: each task's own experts per level.
        levels: number of extraction levels.
        **kwargs: Args to pass to the base class.

    Call args: `x [batch, d]`; returns logits `[batch, num_tasks]`.
    """

    def __init__(
        self, num_tasks: int, num_experts: int, expert_units: int, tower_units: int,
        task_experts: int = 2, levels: int = 2, **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.num_tasks = num_tasks
        self.num_experts = num_experts
        self.expert_units = expert_units
        self.tower_units = tower_units
        self.task_experts = task_experts
        self.levels = levels
        # Flat lists indexed [level * num_tasks + task]: Keras saves the layers in a list, not
        # those in a list of lists. Each group's experts are one kernel, as in MMoE.
        self.own_experts = [
            keras.layers.Dense(task_experts * expert_units, activation="relu",
                               name=f"level_{level}_experts_{t}")
            for level in range(levels) for t in range(num_tasks)]
        self.task_gates = [
            keras.layers.Dense(task_experts + num_experts, activation="softmax",
                               name=f"level_{level}_gate_{t}")
            for level in range(levels) for t in range(num_tasks)]
        self.shared_experts = [
            keras.layers.Dense(num_experts * expert_units, activation="relu",
                               name=f"level_{level}_shared_experts")
            for level in range(levels)]
        self.shared_gates = [
            keras.layers.Dense(num_tasks * task_experts + num_experts, activation="softmax",
                               name=f"level_{level}_shared_gate")
            for level in range(levels - 1)]
        self.towers = [keras.layers.Dense(tower_units, activation="relu", name=f"tower_{t}")
                       for t in range(num_tasks)]
        self.heads = [keras.layers.Dense(1, name=f"head_{t}") for t in range(num_tasks)]

    def build(self, input_shape: tuple[int | None, int]) -> None:
        """Build every level for input width `input_shape[-1]`, and the towers."""
        width = input_shape[-1]
        for level in range(self.levels):
            tasks = slice(level * self.num_tasks, (level + 1) * self.num_tasks)
            for layer in (*self.own_experts[tasks], *self.task_gates[tasks],
                          self.shared_experts[level], *self.shared_gates[level:level + 1]):
                layer.build((None, width))
            width = self.expert_units
        for tower, head in zip(self.towers, self.heads, strict=True):
            tower.build((None, self.expert_units))
            head.build((None, self.tower_units))

    def call(self, x: tf.Tensor) -> tf.Tensor:
        """Extract each task's representation and return one logit per task."""
        tasks, _ = self._extract(x)
        return keras.ops.concatenate(
            [head(tower(h)) for h, tower, head in zip(tasks, self.towers, self.heads, strict=True)],
            axis=-1)

    def gate_weights(self, x: tf.Tensor) -> tf.Tensor:
        """Each task's last-level gate `[num_tasks, batch, task_experts + num_experts]`.

        Its weights are over the task's own experts, then the shared ones.
        """
        _, gates = self._extract(x)
        return keras.ops.stack(gates)

    def _extract(self, x: tf.Tensor) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
        """Run the levels: each task's final representation, and its last-level gate."""
        tasks, shared = [x] * self.num_tasks, x
        for level in range(self.levels):
            first = level * self.num_tasks
            own = [self._experts(self.own_experts[first + t], h, self.task_experts)
                   for t, h in enumerate(tasks)]
            common = self._experts(self.shared_experts[level], shared, self.num_experts)
            gates = [self.task_gates[first + t](h) for t, h in enumerate(tasks)]
            if level < self.levels - 1:
                everything = keras.ops.concatenate([*own, common], axis=1)
                shared = keras.ops.einsum("bk,bku->bu", self.shared_gates[level](shared),
                                          everything)
            tasks = [keras.ops.einsum("bk,bku->bu", gate,
                                      keras.ops.concatenate([mine, common], axis=1))
                     for gate, mine in zip(gates, own, strict=True)]
        return tasks, gates

    def _experts(self, layer: keras.layers.Dense, x: tf.Tensor, count: int) -> tf.Tensor:
        """One group's experts on `x`, `[batch, count, expert_units]`."""
        return keras.ops.reshape(layer(x), (-1, count, self.expert_units))

    def get_config(self) -> dict[str, object]:
        """Return the constructor arguments."""
        return {**super().get_config(), "num_tasks": self.num_tasks,
                "num_experts": self.num_experts, "expert_units": self.expert_units,
                "tower_units": self.tower_units, "task_experts": self.task_experts,
                "levels": self.levels}


@keras.saving.register_keras_serializable(package="splitrec")
class TaskWeighting(keras.layers.Layer):
    """Combines per-task losses into one: static weights, or weights learned by uncertainty.

    Kendall et al. 2018, "Multi-Task Learning Using Uncertainty to Weigh Losses": each task gets
    a learned log-variance s_t and the loss is sum_t w_t * (exp(-s_t) * L_t + s_t), so a task the
    model is unsure of is down-weighted, and s_t's own term keeps it from growing without bound.
    With s_t = 0 (the start, and always when not learned) this is sum_t w_t * L_t.

    Args:
        weights: the static weight w_t of each task.
        learned: whether the log-variances s_t are trained.
        **kwargs: Args to pass to the base class.

    Call args: per-task losses `[num_tasks]`; returns the scalar loss.
    """

    def __init__(self, weights: Sequence[float], learned: bool = False, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.weights_static = [float(w) for w in weights]
        self.learned = learned
        self.log_vars = self.add_weight(shape=(len(self.weights_static),), initializer="zeros",
                                        trainable=learned, name="log_vars")

    def call(self, per_task: tf.Tensor) -> tf.Tensor:
        """The weighted sum of the per-task losses."""
        static = keras.ops.convert_to_tensor(self.weights_static, "float32")
        return keras.ops.sum(static * (keras.ops.exp(-self.log_vars) * per_task + self.log_vars))

    def effective_weights(self) -> tf.Tensor:
        """w_t * exp(-s_t): the weight each task's loss has now."""
        return (keras.ops.convert_to_tensor(self.weights_static, "float32")
                * keras.ops.exp(-self.log_vars))

    def get_config(self) -> dict[str, object]:
        """Return the constructor arguments."""
        return {**super().get_config(), "weights": self.weights_static, "learned": self.learned}


def bottom_model(name: str, vocab_sizes: Sequence[int], num_numeric: int,
                 cfg: ModelConfig, clip_norm: float = 0.0) -> keras.Model:
    """A party's bottom as a Keras model with inputs `cats` and `nums`.

    A label party with no feature columns of its own gets an empty bottom: its h has width 0
    and no weights, so the top sees the feature parties' embeddings alone.
    """
    cats = keras.Input((len(vocab_sizes),), dtype="int32", name="cats")
    nums = keras.Input((num_numeric,), dtype="float32", name="nums")
    if not vocab_sizes and not num_numeric:
        return keras.Model([cats, nums], nums, name=f"bottom_{name}")  # nums is [batch, 0]
    h = Bottom(vocab_sizes, num_numeric, cfg.embedding_dim, cfg.bottom_units, cfg.cut_dim,
               clip_norm, name="bottom")([cats, nums])
    return keras.Model([cats, nums], h, name=f"bottom_{name}")


def top_model(parties: Sequence[str], num_tasks: int, cfg: ModelConfig,
              empty: Sequence[str] = ()) -> keras.Model:
    """The label party's MMoE or PLE (`cfg.kind`) over every party's h_p (in `parties` order).

    Outputs logits. The parties in `empty` have no columns: their h has width 0. The layer is
    named after its kind ("mmoe" as models saved before PLE have it).
    """
    hs = [keras.Input((0 if p in empty else cfg.cut_dim,), dtype="float32", name=f"h_{p}")
          for p in parties]
    x = keras.ops.concatenate(hs, axis=-1) if len(hs) > 1 else hs[0]
    mixer: MMoE | PLE
    if cfg.kind == "ple":
        mixer = PLE(num_tasks, cfg.num_experts, cfg.expert_units, cfg.tower_units,
                    cfg.task_experts, cfg.levels, name="ple")
    else:
        mixer = MMoE(num_tasks, cfg.num_experts, cfg.expert_units, cfg.tower_units, name="mmoe")
    return keras.Model(hs, mixer(x), name="top")


def composed_model(bottoms: dict[str, keras.Model], top: keras.Model,
                   spread: bool = False) -> keras.Model:
    """Bottoms and top wired into one model, sharing their weights: the centralised twin.

    Its inputs are `[cats, nums]` per party. With `spread`, the first party's rows are events
    (a label party that holds events), every other party's rows are people, and a last input
    gives each event's person: the others' embeddings are gathered to the events, as split
    training spreads them (`splitrec_core.event_matrix`), so both take the same steps.
    """
    inputs, hs = [], []
    for name, bottom in bottoms.items():
        cats = keras.Input(bottom.inputs[0].shape[1:], dtype="int32", name=f"{name}_cats")
        nums = keras.Input(bottom.inputs[1].shape[1:], dtype="float32", name=f"{name}_nums")
        inputs += [cats, nums]
        hs.append(bottom([cats, nums]))
    if spread:
        person = keras.Input((), dtype="int32", name="person")
        inputs.append(person)
        hs = [hs[0], *(keras.ops.take(h, person, axis=0) for h in hs[1:])]
    return keras.Model(inputs, top(hs), name="central")


def mean_gate_weights(top: keras.Model, hs: Sequence[tf.Tensor]) -> tf.Tensor:
    """Each task's mean gate weight per expert on these rows, `[num_tasks, experts]`.

    For PLE, the last level's gates: experts are the task's own, then the shared ones.
    """
    x = keras.ops.concatenate(list(hs), axis=-1) if len(hs) > 1 else hs[0]
    mixer = next(layer for layer in top.layers if isinstance(layer, MMoE | PLE))
    return keras.ops.mean(mixer.gate_weights(x), axis=1)


def task_losses(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Mean BCE per task `[num_tasks]` from logits; labels and logits are `[batch, num_tasks]`."""
    return tf.reduce_mean(
        tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits), axis=0)

