"""Central training's trainer: the whole composed model with one optimizer."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf
from keras.optimizers.schedules import LearningRateSchedule

from splitrec_core.model import TaskWeighting, composed_model, mean_gate_weights, task_losses
from splitrec_core.training.steps.common import adam, undone, zeros


class CentralTrainer:
    """The whole composed model with one optimizer: the baseline split training must match.

    It is the pooled-data baseline. Its steps are compiled as the split parties' are (`xla`), so
    the two compare like with like.

    Args:
        bottoms: every party's bottom by party, in the top's input order.
        top: the MMoE top over their embeddings.
        weighting: combines the per-task losses.
        learning_rate: a rate or a schedule.
        xla: compile the training step with XLA.
        spread: the first party's rows are events, the others' people, and the model takes each
            event's person last (`composed_model`).
    """

    def __init__(self, bottoms: dict[str, keras.Model], top: keras.Model, weighting: TaskWeighting,
                 learning_rate: float | LearningRateSchedule, xla: bool = False,
                 spread: bool = False) -> None:
        self.bottoms = list(bottoms.values())
        self.top = top
        self.spread = spread
        self.model = model = composed_model(bottoms, top, spread)  # [cats, nums] per party
        self.weighting = weighting
        self.variables = [*model.trainable_variables, *weighting.trainable_variables]
        self.optimizer = adam(learning_rate, self.variables)
        self.xla = xla
        inputs = self._input_specs = [tf.TensorSpec([None, *i.shape[1:]], i.dtype)
                                      for i in model.inputs]
        labels = self._labels_spec = tf.TensorSpec([None, top.outputs[0].shape[1]], tf.float32)
        self.step = tf.function(self._step, input_signature=[inputs, labels], jit_compile=xla)
        self.predict = tf.function(self._predict, input_signature=[inputs])
        self.gate_usage = tf.function(self._gate_usage, input_signature=[inputs])

    def trace(self, batch_sizes: Sequence[int] = ()) -> None:
        """As `BottomTrainer.trace`."""
        self.step, self.predict, self.gate_usage = (
            step.get_concrete_function() for step in (self.step, self.predict, self.gate_usage))
        if self.xla and batch_sizes:
            undone([*self.model.variables, *self.weighting.variables, *self.optimizer.variables],
                   lambda: self._take_each_step(batch_sizes))

    def _take_each_step(self, batch_sizes: Sequence[int]) -> None:
        """The training step at each batch size."""
        for n in batch_sizes:
            self.step([zeros(spec, n) for spec in self._input_specs], zeros(self._labels_spec, n))

    @property
    def models(self) -> list[keras.Layer]:
        """What this trainer trains."""
        return [self.model, self.weighting]

    def _step(self, inputs: list[tf.Tensor], labels: tf.Tensor) -> tf.Tensor:
        """One Adam step on a batch; returns the per-task losses."""
        with tf.GradientTape() as tape:
            per_task = task_losses(labels, self.model(inputs, training=True))
            loss = self.weighting(per_task)
        self.optimizer.apply(tape.gradient(loss, self.variables), self.variables)
        return per_task

    def _predict(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        """Probabilities `[batch, num_tasks]`."""
        return tf.sigmoid(self.model(inputs, training=False))

    def _gate_usage(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        """Each task's mean gate weight per expert on these rows."""
        hs = [bottom(inputs[2 * i : 2 * i + 2], training=False)
              for i, bottom in enumerate(self.bottoms)]
        if self.spread:
            hs = [hs[0], *(tf.gather(h, inputs[-1]) for h in hs[1:])]
        return mean_gate_weights(self.top, hs)
