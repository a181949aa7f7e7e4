"""The Multi-gate Mixture-of-Experts top (Ma et al., KDD 2018).

K shared experts, one softmax gate per task over the experts, one tower per task; it reads the
concatenation of every party's h_p.
"""

from __future__ import annotations

import keras
import tensorflow as tf


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
