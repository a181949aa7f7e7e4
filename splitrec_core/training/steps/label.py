"""The label party's trainer: its own bottom, the MMoE top and the task weighting."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from splitrec_core.model import TaskWeighting, mean_gate_weights, task_losses
from splitrec_core.training.steps.common import (
    StepSettings,
    adam,
    agreement,
    input_specs,
    noise_generator,
    undone,
    zeros,
)


class LabelTrainer:
    """The label party's own bottom, the MMoE top and the task weighting, with one optimizer.

    Its own bottom runs inside the same step as the top: its embedding never leaves it, so there
    is no cut to cross and nothing to recompute. A batch (`train_batch`) costs the label party two
    calls, `gradients` and then `apply`, so that dL/dh goes back before the Adam step and the
    feature parties step their bottoms meanwhile; or, `fused`, one call that does both. Fuse when
    the feature parties embed ahead: they then hold a batch in flight, and the label party's own
    time per batch is what bounds training (sequentially, the two calls are faster: the feature
    parties step while the label party takes its Adam step).

    Args:
        bottom: the label party's bottom, inputs `[cats, nums]`, output h.
        top: the top model over every party's h (label party first).
        weighting: combines the per-task losses.
        steps: its learning rate, XLA, and the noise on the dL/dh returned to feature parties.
        fused: take each batch's gradients and Adam step in one call.
    """

    def __init__(self, bottom: keras.Model, top: keras.Model, weighting: TaskWeighting,
                 steps: StepSettings, *, fused: bool = False) -> None:
        self.bottom = bottom
        self.top = top
        self.weighting = weighting
        self.optimizer = adam(steps.learning_rate, self.variables)
        self.gradient_noise = steps.noise
        self._rng = noise_generator(steps.noise_seed)
        self.xla = xla = steps.xla
        self.fused = fused
        cats, nums = input_specs(bottom)
        received = [tf.TensorSpec([None, h.shape[1]], tf.float32) for h in top.inputs[1:]]
        labels = tf.TensorSpec([None, top.outputs[0].shape[1]], tf.float32)
        self._specs = (cats, nums, received, labels)
        self.gradients = tf.function(self._gradients, jit_compile=xla,
                                     input_signature=[cats, nums, received, labels])
        self.apply = tf.function(self._apply, jit_compile=xla)  # traced on what `gradients` returns
        self.gradients_and_apply = tf.function(self._gradients_and_apply, jit_compile=xla,
                                               input_signature=[cats, nums, received, labels])
        self.predict = tf.function(self._predict, input_signature=[cats, nums, received])
        self.gate_usage = tf.function(self._gate_usage, input_signature=[cats, nums, received])
        self.min_cosine = steps.local_min_cosine
        self.local_step = tf.function(self._local_step, jit_compile=xla,
                                      input_signature=[cats, nums, received, labels, received])

    def trace(self, batch_sizes: Sequence[int] = ()) -> None:
        """As `BottomTrainer.trace`, for the training steps `train_batch` uses.

        `apply` takes the gradients as `gradients` returns them: the embedding table's stay
        sparse (`IndexedSlices`), so Adam steps it exactly as central training's one Adam does.
        """
        self.predict, self.gate_usage = (f.get_concrete_function()
                                         for f in (self.predict, self.gate_usage))
        if self.fused:
            self.gradients_and_apply = self.gradients_and_apply.get_concrete_function()
        else:
            self.gradients = self.gradients.get_concrete_function()
            specs = [tf.type_spec_from_value(g) for g in self.gradients.structured_outputs[2]]
            self.apply = self.apply.get_concrete_function(specs)
        if self.min_cosine is not None:
            self.local_step = self.local_step.get_concrete_function()
        if self.xla and batch_sizes:
            variables = [v for model in self.models for v in model.variables]
            undone([*variables, *self.optimizer.variables],
                   lambda: self._take_each_step(batch_sizes))

    def _take_each_step(self, batch_sizes: Sequence[int]) -> None:
        """The training steps at each batch size."""
        cats, nums, received, labels = self._specs
        for n in batch_sizes:
            self.train_batch(zeros(cats, n), zeros(nums, n), [zeros(h, n) for h in received],
                             zeros(labels, n), lambda sent: None)
            if self.min_cosine is not None:
                self.local_step(zeros(cats, n), zeros(nums, n), [zeros(h, n) for h in received],
                                zeros(labels, n), [zeros(h, n) for h in received])

    def train_batch(self, cats: tf.Tensor, nums: tf.Tensor, received: list[tf.Tensor],
                    labels: tf.Tensor, hand_back: Callable[[list[tf.Tensor]], None]) -> tf.Tensor:
        """Train on one batch and `hand_back` dL/dh for every received h.

        Returns the per-task losses.
        """
        if self.fused:
            per_task, sent = self.gradients_and_apply(cats, nums, received, labels)
            hand_back(sent)
        else:
            per_task, sent, own_grads = self.gradients(cats, nums, received, labels)
            hand_back(sent)
            self.apply(own_grads)
        return per_task

    @property
    def models(self) -> list[keras.Layer]:
        """What this trainer trains (and a checkpoint holds)."""
        return [self.bottom, self.top, self.weighting]

    @property
    def variables(self) -> list[tf.Variable]:
        """Trainable variables of the bottom, the top and (if learned) the task weighting."""
        return [v for model in self.models for v in model.trainable_variables]

    def _hs(self, cats: tf.Tensor, nums: tf.Tensor, received: list[tf.Tensor],
            training: bool) -> list[tf.Tensor]:
        return [self.bottom([cats, nums], training=training), *received]

    def _predict(self, cats: tf.Tensor, nums: tf.Tensor, received: list[tf.Tensor]) -> tf.Tensor:
        """Probabilities `[batch, num_tasks]`."""
        return tf.sigmoid(self.top(self._hs(cats, nums, received, False), training=False))

    def _gate_usage(self, cats: tf.Tensor, nums: tf.Tensor, received: list[tf.Tensor]) -> tf.Tensor:
        """Each task's mean gate weight per expert on these rows."""
        return mean_gate_weights(self.top, self._hs(cats, nums, received, False))

    def _gradients(self, cats: tf.Tensor, nums: tf.Tensor, received: list[tf.Tensor],
                   labels: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor], list[tf.Tensor]]:
        """Per-task losses, dL/dh for every received h, and its own variables' gradients.

        Stepping is a separate call (`apply`): the label party returns dL/dh first and steps
        while the feature parties step their bottoms. The privacy noise is not added here but on
        what crosses (`noised`).
        """
        with tf.GradientTape() as tape:
            tape.watch(received)
            logits = self.top(self._hs(cats, nums, received, True), training=True)
            per_task = task_losses(labels, logits)
            loss = self.weighting(per_task)
        grads = tape.gradient(loss, [*received, *self.variables])
        return per_task, grads[: len(received)], grads[len(received) :]

    def noised(self, sent: tf.Tensor) -> tf.Tensor:
        """`sent`, a dL/dh about to cross, with the privacy noise: once per row that crosses.

        With events a row is a person, its gradient the sum over its events: noise added per
        event would sum too, its spread growing with the person's events, and tell a feature
        party who is active.
        """
        if self.gradient_noise <= 0:
            return sent
        return sent + self._rng.normal(tf.shape(sent), stddev=self.gradient_noise)

    def _local_step(self, cats: tf.Tensor, nums: tf.Tensor, received: list[tf.Tensor],
                    labels: tf.Tensor, sent: list[tf.Tensor]) -> None:
        """A local update: step again on a cached batch with the embeddings it came with.

        `sent` is the dL/dh this party computed for each received h then. A row counts as far
        as its dL/dh now still points where it did (`agreement` over every feature party's
        gradient side by side): CELU-VFL's weighting for the party that holds the labels. The
        learning-rate schedule counts it as a step (`BottomTrainer._local_step`).
        """
        assert self.min_cosine is not None  # traced only with local updates
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(received)
            logits = self.top(self._hs(cats, nums, received, True), training=True)
            plain = self.weighting(task_losses(labels, logits))
            with tape.stop_recording():
                fresh = tape.gradient(plain, received)
                weights = agreement(tf.concat(fresh, 1), tf.concat(sent, 1), self.min_cosine)
            loss = self.weighting(task_losses(labels, logits, weights))
        self._apply(tape.gradient(loss, self.variables))

    def _apply(self, grads: list[tf.Tensor]) -> None:
        """Step this party's variables on gradients from `gradients`."""
        self.optimizer.apply(grads, self.variables)

    def _gradients_and_apply(self, cats: tf.Tensor, nums: tf.Tensor, received: list[tf.Tensor],
                             labels: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """`gradients`, then `apply`, as one call: the per-task losses and the dL/dh to send."""
        per_task, sent, own_grads = self._gradients(cats, nums, received, labels)
        self._apply(own_grads)
        return per_task, sent
