"""The multi-task loss: a BCE per task, weighted by fixed or learned task weights."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf


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


def task_losses(labels: tf.Tensor, logits: tf.Tensor,
                row_weights: tf.Tensor | None = None) -> tf.Tensor:
    """Mean BCE per task `[num_tasks]` from logits; labels and logits are `[batch, num_tasks]`.

    With `row_weights` `[batch]`, each row's losses count that much (a local update's rows).
    """
    per_row = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    if row_weights is not None:
        per_row *= row_weights[:, None]
    return tf.reduce_mean(per_row, axis=0)
