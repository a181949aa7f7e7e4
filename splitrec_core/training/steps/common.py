"""What every trainer shares.

The op threads, the step settings, optimizers whose slots exist before the first step, the
privately seeded noise, and compiling steps on zeros.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
import tensorflow as tf
from keras.optimizers.schedules import LearningRateSchedule

from splitrec_core.privacy.entropy import private_seed


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


def adam(learning_rate: float | LearningRateSchedule,
         variables: list[tf.Variable]) -> keras.optimizers.Adam:
    """An Adam whose slots exist before any step, so no step creates variables while traced."""
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(variables)
    return optimizer


def noise_generator(seed: int | None) -> tf.random.Generator:
    """The generator of a party's privacy noise: from `seed`, else from a fresh private seed."""
    return tf.random.Generator.from_seed(private_seed("noise") if seed is None else seed)


def undone(variables: list[tf.Variable], steps: Callable[[], None]) -> None:
    """Run `steps` (to compile them), then put `variables` back as they were."""
    saved = [v.numpy() for v in variables]
    steps()
    for variable, value in zip(variables, saved, strict=True):
        variable.assign(value)


def zeros(spec: tf.TensorSpec, rows: int) -> tf.Tensor:
    """A batch of `rows` zeros shaped as `spec` (to compile a step on)."""
    return tf.zeros([rows, *spec.shape[1:]], spec.dtype)


def input_specs(bottom: keras.Model) -> tuple[tf.TensorSpec, tf.TensorSpec]:
    """A bottom's `[cats, nums]` inputs, for batches of any size."""
    return (tf.TensorSpec([None, bottom.inputs[0].shape[1]], tf.int32),
            tf.TensorSpec([None, bottom.inputs[1].shape[1]], tf.float32))


@dataclass(frozen=True)
class StepSettings:
    """How a party's trainer steps, and the privacy noise on what it hands over.

    Attributes:
        learning_rate: a rate or a schedule.
        xla: compile the training steps with XLA.
        noise: std of the Gaussian noise on what it hands over (a feature party's h, the label
            party's dL/dh); 0 = none.
        noise_seed: seeds the noise; private to this party (default: fresh from the OS).
        local_min_cosine: with local updates (`training.local_updates`), the least cosine similarity
            between a cached row's value and today's for the row to count (`agreement`); None:
            no local updates, and no local step is traced.
    """

    learning_rate: float | LearningRateSchedule
    xla: bool = False
    noise: float = 0.0
    noise_seed: int | None = None
    local_min_cosine: float | None = None


def agreement(fresh: tf.Tensor, cached: tf.Tensor, min_cosine: float) -> tf.Tensor:
    """Per row, how far a local step may trust a cached row: CELU-VFL's instance weight.

    The cosine similarity of the row's `fresh` value (computed now) and its `cached` one, where
    it is at least `min_cosine`, else 0: a row whose value has turned away since it crossed
    would step the model the wrong way. Both are `[rows, width]`; the weights `[rows]` carry no
    gradient.
    """
    fresh, cached = tf.stop_gradient(fresh), tf.stop_gradient(cached)
    cosine = tf.clip_by_value(
        tf.reduce_sum(fresh * cached, axis=1)
        / (tf.maximum(tf.norm(fresh, axis=1), 1e-12) * tf.maximum(tf.norm(cached, axis=1), 1e-12)),
        -1.0, 1.0)
    return tf.where(cosine >= min_cosine, cosine, tf.zeros_like(cosine))
