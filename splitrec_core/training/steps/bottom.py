"""A feature party's trainer: its bottom and its optimizer."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from splitrec_core.training.steps.common import (
    StepSettings,
    adam,
    agreement,
    input_specs,
    noise_generator,
    undone,
    zeros,
)


class BottomTrainer:
    """One party's bottom and its optimizer: it sees its own columns and the dL/dh sent back.

    Args:
        bottom: the party's bottom model, inputs `[cats, nums]`, output h.
        steps: its learning rate, XLA, and the noise added to each h it hands over.
    """

    def __init__(self, bottom: keras.Model, steps: StepSettings) -> None:
        self.bottom = bottom
        self.optimizer = adam(steps.learning_rate, bottom.trainable_variables)
        self.noise = steps.noise
        self._rng = noise_generator(steps.noise_seed)
        self.xla = xla = steps.xla
        cats, nums = self._specs = input_specs(bottom)
        grad = self._grad_spec = tf.TensorSpec([None, bottom.outputs[0].shape[1]], tf.float32)
        self.forward = tf.function(self._forward, input_signature=[cats, nums], jit_compile=xla)
        self.backward = tf.function(self._backward, input_signature=[cats, nums, grad],
                                    jit_compile=xla)
        self.backward_then_forward = tf.function(self._backward_then_forward, jit_compile=xla,
                                                 input_signature=[cats, nums, grad, cats, nums])
        self.embed = tf.function(self._embed, input_signature=[cats, nums])
        self.min_cosine = steps.local_min_cosine
        self.local_step = tf.function(self._local_step, jit_compile=xla,
                                      input_signature=[cats, nums, grad, grad])

    def trace(self, batch_sizes: Sequence[int] = ()) -> None:
        """Trace every step now (it runs nothing) and keep the traced graphs.

        Training time is then training, and each call skips matching its arguments to a trace.
        With XLA, also compile the training steps for `batch_sizes` (`Plan.batch_sizes`).
        """
        self.forward, self.backward, self.backward_then_forward, self.embed = (
            step.get_concrete_function()
            for step in (self.forward, self.backward, self.backward_then_forward, self.embed))
        if self.min_cosine is not None:
            self.local_step = self.local_step.get_concrete_function()
        if self.xla and batch_sizes:
            undone([*self.bottom.variables, *self.optimizer.variables],
                   lambda: self._take_each_step(batch_sizes))

    def _take_each_step(self, batch_sizes: Sequence[int]) -> None:
        """Each training step at each size it meets in an epoch.

        A full batch is followed by a full one or by the remainder, and the last batches are
        stepped on without a next one.
        """
        batch = {n: [zeros(spec, n) for spec in self._specs] for n in batch_sizes}
        for n in batch_sizes:
            self.forward(*batch[n])
            self.backward(*batch[n], zeros(self._grad_spec, n))
            first = batch_sizes[0]
            self.backward_then_forward(*batch[first], zeros(self._grad_spec, first), *batch[n])
            if self.min_cosine is not None:
                self.local_step(*batch[n], *(zeros(self._grad_spec, n) for _ in range(2)))

    def _embed(self, cats: tf.Tensor, nums: tf.Tensor) -> tf.Tensor:
        """The embedding for scoring: no noise."""
        return self.bottom([cats, nums], training=False)

    def _forward(self, cats: tf.Tensor, nums: tf.Tensor) -> tf.Tensor:
        """The embedding to hand over (clipped inside the bottom), plus the configured noise."""
        h = self.bottom([cats, nums], training=True)
        if self.noise > 0:
            h += self._rng.normal(tf.shape(h), stddev=self.noise)
        return h

    def _backward(self, cats: tf.Tensor, nums: tf.Tensor, grad: tf.Tensor) -> None:
        """Back-propagate the received dL/dh through the bottom and step it.

        It recomputes the bottom's forward pass, cheaper than keeping activations across calls.
        """
        with tf.GradientTape() as tape:
            h = self.bottom([cats, nums], training=True)
        variables = self.bottom.trainable_variables
        self.optimizer.apply(tape.gradient(h, variables, output_gradients=grad), variables)

    def _local_step(self, cats: tf.Tensor, nums: tf.Tensor, sent: tf.Tensor,
                    grad: tf.Tensor) -> None:
        """A local update: step again on a cached batch's gradient, without a message.

        `sent` is the embedding the label party computed `grad` on; each row's gradient counts
        as far as the bottom's embedding of the row now still points where `sent` did
        (`agreement`). It is a step of the optimizer like any other, so the learning-rate
        schedule counts it too, as CELU-VFL's `global_step` does.
        """
        with tf.GradientTape() as tape:
            h = self.bottom([cats, nums], training=True)
        assert self.min_cosine is not None  # traced only with local updates
        weighted = grad * agreement(h, sent, self.min_cosine)[:, None]
        variables = self.bottom.trainable_variables
        self.optimizer.apply(tape.gradient(h, variables, output_gradients=weighted), variables)

    def _backward_then_forward(self, cats: tf.Tensor, nums: tf.Tensor, grad: tf.Tensor,
                               next_cats: tf.Tensor, next_nums: tf.Tensor) -> tf.Tensor:
        """Step on one batch's gradient, then embed the next batch with the updated bottom."""
        self._backward(cats, nums, grad)
        return self._forward(next_cats, next_nums)
