"""Each party's compiled training steps (a feature party's bottom; the label party's own bottom
with the MMoE top and task weighting), and central training's, over the same models.

Every step is one `tf.function` with a fixed input signature (any batch size), so each is traced
once per run, up front (`trace`), and a batch costs one TensorFlow call per feature party and one
or two for the label party. Adam optimizers over disjoint variables take exactly the steps one
Adam over all of them would, so the split model trains as the centralised one does.

With `xla`, the training steps are compiled by XLA into a few fused kernels each, which may use
every core when one step runs at a time (`set_op_threads`); fused kernels make each step cheaper
(benchmarks/RESULTS.md has the figures). XLA compiles a step on its first call at each batch
size, so `trace` takes each step once per size on zeros and puts every variable back: compiling
is start-up, as tracing is. Privacy noise comes from a generator seeded privately
(`entropy.private_seed`), never from the shared seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import tensorflow as tf
from keras.optimizers.schedules import LearningRateSchedule

from splitrec_core.entropy import private_seed
from splitrec_core.model import TaskWeighting, composed_model, mean_gate_weights, task_losses


def set_op_threads(xla: bool, side_by_side: bool = False) -> None:
    """Choose how many threads each TensorFlow op may use, for this process's whole run.

    Graph-mode ops here are small (a batch of about a thousand rows through layers of tens of
    units): splitting each across cores costs more in hand-offs than it saves, so each runs on
    one thread. XLA fuses a step into a few larger kernels, which do gain from every core when
    one step runs at a time (`side_by_side` False: central training, sequential split). When the
    parties' steps run at the same time (pipelined split training), each keeps to one thread
    and the steps share the cores between them instead of queueing for one pool. Measured in
    benchmarks/RESULTS.md. A no-op once the TensorFlow runtime has started (its settings are
    then fixed).
    """
    try:  # 0: one per core
        tf.config.threading.set_intra_op_parallelism_threads(0 if xla and not side_by_side else 1)
    except RuntimeError:
        pass


def _adam(learning_rate: float | LearningRateSchedule, variables: list[tf.Variable]) -> keras.optimizers.Adam:
    """An Adam whose slots exist before any step, so no step creates variables while traced."""
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(variables)
    return optimizer


def _noise_generator(seed: int | None) -> tf.random.Generator:
    """The generator of a party's privacy noise: from `seed`, else from a fresh private seed."""
    return tf.random.Generator.from_seed(private_seed("noise") if seed is None else seed)


def _undone(variables: list[tf.Variable], steps: Callable[[], None]) -> None:
    """Run `steps` (to compile them), then put `variables` back as they were."""
    saved = [v.numpy() for v in variables]
    steps()
    for variable, value in zip(variables, saved, strict=True):
        variable.assign(value)


def _zeros(spec: tf.TensorSpec, rows: int) -> tf.Tensor:
    """A batch of `rows` zeros shaped as `spec` (to compile a step on)."""
    return tf.zeros([rows, *spec.shape[1:]], spec.dtype)


def _input_specs(bottom: keras.Model) -> tuple[tf.TensorSpec, tf.TensorSpec]:
    """A bottom's `[cats, nums]` inputs, for batches of any size."""
    return (tf.TensorSpec([None, bottom.inputs[0].shape[1]], tf.int32),
            tf.TensorSpec([None, bottom.inputs[1].shape[1]], tf.float32))


class BottomTrainer:
    """One party's bottom and its optimizer: it sees its own columns and the dL/dh sent back.

    Args:
        bottom: the party's bottom model, inputs `[cats, nums]`, output h.
        learning_rate: a rate or a schedule.
        noise: std of the Gaussian noise added to each h it hands over (0 = none).
        xla: compile the training steps with XLA.
        noise_seed: seeds the noise; private to this party (default: fresh from the OS).
    """

    def __init__(self, bottom: keras.Model, learning_rate: float | LearningRateSchedule,
                 noise: float = 0.0, xla: bool = False, noise_seed: int | None = None) -> None:
        self.bottom = bottom
        self.optimizer = _adam(learning_rate, bottom.trainable_variables)
        self.noise = noise
        self._rng = _noise_generator(noise_seed)
        self.xla = xla
        cats, nums = self._specs = _input_specs(bottom)
        grad = self._grad_spec = tf.TensorSpec([None, bottom.outputs[0].shape[1]], tf.float32)
        self.forward = tf.function(self._forward, input_signature=[cats, nums], jit_compile=xla)
        self.backward = tf.function(self._backward, input_signature=[cats, nums, grad], jit_compile=xla)
        self.backward_then_forward = tf.function(self._backward_then_forward, jit_compile=xla,
                                                 input_signature=[cats, nums, grad, cats, nums])
        self.embed = tf.function(self._embed, input_signature=[cats, nums])

    def trace(self, batch_sizes: Sequence[int] = ()) -> None:
        """Trace every step now (it runs nothing) and keep the traced graphs: training time is
        then training, and each call skips matching its arguments to a trace.
        With XLA, also compile the training steps for `batch_sizes` (`Plan.batch_sizes`)."""
        self.forward, self.backward, self.backward_then_forward, self.embed = (
            step.get_concrete_function()
            for step in (self.forward, self.backward, self.backward_then_forward, self.embed))
        if self.xla and batch_sizes:
            _undone([*self.bottom.variables, *self.optimizer.variables],
                    lambda: self._take_each_step(batch_sizes))

    def _take_each_step(self, batch_sizes: Sequence[int]) -> None:
        """Each training step at each size it meets in an epoch: a full batch is followed by a
        full one or by the remainder, and the last batches are stepped on without a next one."""
        batch = {n: [_zeros(spec, n) for spec in self._specs] for n in batch_sizes}
        for n in batch_sizes:
            self.forward(*batch[n])
            self.backward(*batch[n], _zeros(self._grad_spec, n))
            self.backward_then_forward(*batch[batch_sizes[0]], _zeros(self._grad_spec, batch_sizes[0]),
                                       *batch[n])

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
        """Back-propagate the received dL/dh through the bottom (recomputing its forward pass,
        cheaper than keeping activations across calls) and step it."""
        with tf.GradientTape() as tape:
            h = self.bottom([cats, nums], training=True)
        variables = self.bottom.trainable_variables
        self.optimizer.apply(tape.gradient(h, variables, output_gradients=grad), variables)

    def _backward_then_forward(self, cats: tf.Tensor, nums: tf.Tensor, grad: tf.Tensor,
                               next_cats: tf.Tensor, next_nums: tf.Tensor) -> tf.Tensor:
        """Step on one batch's gradient, then embed the next batch with the updated bottom."""
        self._backward(cats, nums, grad)
        return self._forward(next_cats, next_nums)


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
        learning_rate: a rate or a schedule.
        gradient_noise: std of the Gaussian noise on the dL/dh returned to feature parties.
        xla: compile the training steps with XLA.
        fused: take each batch's gradients and Adam step in one call.
        noise_seed: seeds the gradient noise; private to this party (default: fresh from the OS).
    """

    def __init__(self, bottom: keras.Model, top: keras.Model, weighting: TaskWeighting,
                 learning_rate: float | LearningRateSchedule, gradient_noise: float = 0.0,
                 xla: bool = False, fused: bool = False, noise_seed: int | None = None) -> None:
        self.bottom = bottom
        self.top = top
        self.weighting = weighting
        self.optimizer = _adam(learning_rate, self.variables)
        self.gradient_noise = gradient_noise
        self._rng = _noise_generator(noise_seed)
        self.xla = xla
        self.fused = fused
        cats, nums = _input_specs(bottom)
        received = [tf.TensorSpec([None, h.shape[1]], tf.float32) for h in top.inputs[1:]]
        labels = tf.TensorSpec([None, top.outputs[0].shape[1]], tf.float32)
        self._specs = (cats, nums, received, labels)
        self.gradients = tf.function(self._gradients, input_signature=[cats, nums, received, labels],
                                     jit_compile=xla)
        self.apply = tf.function(self._apply, jit_compile=xla)  # traced on what `gradients` returns
        self.gradients_and_apply = tf.function(self._gradients_and_apply, jit_compile=xla,
                                               input_signature=[cats, nums, received, labels])
        self.predict = tf.function(self._predict, input_signature=[cats, nums, received])
        self.gate_usage = tf.function(self._gate_usage, input_signature=[cats, nums, received])

    def trace(self, batch_sizes: Sequence[int] = ()) -> None:
        """As `BottomTrainer.trace`, for the training steps `train_batch` uses. `apply` takes the
        gradients as `gradients` returns them: the embedding table's stay sparse
        (`IndexedSlices`), so Adam steps it exactly as central training's one Adam does."""
        self.predict, self.gate_usage = (f.get_concrete_function() for f in (self.predict, self.gate_usage))
        if self.fused:
            self.gradients_and_apply = self.gradients_and_apply.get_concrete_function()
        else:
            self.gradients = self.gradients.get_concrete_function()
            specs = [tf.type_spec_from_value(g) for g in self.gradients.structured_outputs[2]]
            self.apply = self.apply.get_concrete_function(specs)
        if self.xla and batch_sizes:
            _undone([*(v for model in self.models for v in model.variables), *self.optimizer.variables],
                    lambda: self._take_each_step(batch_sizes))

    def _take_each_step(self, batch_sizes: Sequence[int]) -> None:
        """The training steps at each batch size."""
        cats, nums, received, labels = self._specs
        for n in batch_sizes:
            self.train_batch(_zeros(cats, n), _zeros(nums, n), [_zeros(h, n) for h in received],
                             _zeros(labels, n), lambda sent: None)

    def train_batch(self, cats: tf.Tensor, nums: tf.Tensor, received: list[tf.Tensor],
                    labels: tf.Tensor, hand_back: Callable[[list[tf.Tensor]], None]) -> tf.Tensor:
        """Train on one batch and `hand_back` dL/dh for every received h; return the per-task
        losses."""
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
        """Per-task losses, dL/dh for every received h (noised), and the gradients of this
        party's own variables.

        Stepping is a separate call (`apply`): the label party returns dL/dh first and steps
        while the feature parties step their bottoms.
        """
        with tf.GradientTape() as tape:
            tape.watch(received)
            per_task = task_losses(labels, self.top(self._hs(cats, nums, received, True), training=True))
            loss = self.weighting(per_task)
        grads = tape.gradient(loss, [*received, *self.variables])
        sent = grads[: len(received)]
        if self.gradient_noise > 0:
            sent = [g + self._rng.normal(tf.shape(g), stddev=self.gradient_noise) for g in sent]
        return per_task, sent, grads[len(received) :]

    def _apply(self, grads: list[tf.Tensor]) -> None:
        """Step this party's variables on gradients from `gradients`."""
        self.optimizer.apply(grads, self.variables)

    def _gradients_and_apply(self, cats: tf.Tensor, nums: tf.Tensor, received: list[tf.Tensor],
                             labels: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """`gradients`, then `apply`, as one call: the per-task losses and the dL/dh to send."""
        per_task, sent, own_grads = self._gradients(cats, nums, received, labels)
        self._apply(own_grads)
        return per_task, sent


class CentralTrainer:
    """The whole composed model with one optimizer: the pooled-data baseline split training must
    match. Its steps are compiled as the split parties' are (`xla`), so the two compare like
    with like.

    Args:
        bottoms: every party's bottom by party, in the top's input order.
        top: the MMoE top over their embeddings.
        weighting: combines the per-task losses.
        learning_rate: a rate or a schedule.
        xla: compile the training step with XLA.
    """

    def __init__(self, bottoms: dict[str, keras.Model], top: keras.Model, weighting: TaskWeighting,
                 learning_rate: float | LearningRateSchedule, xla: bool = False) -> None:
        self.bottoms = list(bottoms.values())
        self.top = top
        self.model = model = composed_model(bottoms, top)  # inputs [cats, nums] per party
        self.weighting = weighting
        self.variables = [*model.trainable_variables, *weighting.trainable_variables]
        self.optimizer = _adam(learning_rate, self.variables)
        self.xla = xla
        inputs = self._input_specs = [tf.TensorSpec([None, *i.shape[1:]], i.dtype) for i in model.inputs]
        labels = self._labels_spec = tf.TensorSpec([None, top.outputs[0].shape[1]], tf.float32)
        self.step = tf.function(self._step, input_signature=[inputs, labels], jit_compile=xla)
        self.predict = tf.function(self._predict, input_signature=[inputs])
        self.gate_usage = tf.function(self._gate_usage, input_signature=[inputs])

    def trace(self, batch_sizes: Sequence[int] = ()) -> None:
        """As `BottomTrainer.trace`."""
        self.step, self.predict, self.gate_usage = (
            step.get_concrete_function() for step in (self.step, self.predict, self.gate_usage))
        if self.xla and batch_sizes:
            _undone([*self.model.variables, *self.weighting.variables, *self.optimizer.variables],
                    lambda: self._take_each_step(batch_sizes))

    def _take_each_step(self, batch_sizes: Sequence[int]) -> None:
        """The training step at each batch size."""
        for n in batch_sizes:
            self.step([_zeros(spec, n) for spec in self._input_specs], _zeros(self._labels_spec, n))

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
        hs = [bottom(inputs[2 * i : 2 * i + 2], training=False) for i, bottom in enumerate(self.bottoms)]
        return mean_gate_weights(self.top, hs)
