"""The Progressive Layered Extraction top (Tang et al., RecSys 2020).

Besides shared experts each task has its own, over levels of such extraction, so tasks that
conflict need not share every expert.
"""

from __future__ import annotations

import keras
import tensorflow as tf


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
