"""Per-epoch bookkeeping every party shares.

It covers the batch order, the validation rows, the learning-rate schedule, the history, the
early-stopping decision and the best weights so far.

The batch order and the validation rows come from the shared seed, so every party derives the same
ones without a message; only the label party, which holds the labels, decides when to stop.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import keras
import numpy as np
import pyarrow as pa
import tensorflow as tf
from keras.optimizers.schedules import LearningRateSchedule
from sklearn.metrics import roc_auc_score

from splitrec_core.config import TrainingConfig

EVAL_BATCH = 8192


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`(fit_rows, validation_rows)` of `n` training rows: a seeded `fraction` held out, sorted."""
    order = np.random.default_rng([seed, 0x7A11D]).permutation(n)
    held = int(round(n * fraction))
    return np.sort(order[held:]), np.sort(order[:held])


def eval_batches(rows: np.ndarray) -> Iterator[np.ndarray]:
    """`rows` in order, in chunks for scoring."""
    for start in range(0, len(rows), EVAL_BATCH):
        yield rows[start : start + EVAL_BATCH]


def auc_per_task(labels: np.ndarray, probabilities: np.ndarray) -> list[float]:
    """ROC AUC of each column; 0.5 where a task has one class only in these rows."""
    return [float(roc_auc_score(labels[:, j], probabilities[:, j]))
            if len(np.unique(labels[:, j])) == 2 else 0.5 for j in range(labels.shape[1])]


@dataclass(frozen=True)
class Plan:
    """The schedule every party derives from the shared config.

    It gives the rows to fit, the rows to validate on, the batch order, and when to give up.
    """

    fit: np.ndarray
    validation: np.ndarray
    epochs: int
    batch_size: int
    seed: int
    patience: int

    @classmethod
    def of(cls, training: TrainingConfig, train_rows: int) -> Plan:
        """The plan for `train_rows` aligned training rows."""
        fit, validation = split_validation(train_rows, training.validation_fraction, training.seed)
        return cls(fit, validation, training.epochs, training.batch_size, training.seed,
                   training.patience)

    def batch_tensors(self, epoch: int, *matrices: np.ndarray) -> list[tuple[tf.Tensor, ...]]:
        """Every batch of `epoch`, its fitting rows in the epoch's shuffled order.

        Per batch, one tensor from each of `matrices` (whose rows are the training rows).

        Each matrix is reordered and converted once an epoch, not a batch at a time: on threads
        the parties share one interpreter lock, and indexing and converting three arrays a batch
        cost the label party a measurable share of its pipelined batch (benchmarks/RESULTS.md).
        """
        order = self.epoch_order(epoch)
        return list(zip(*(tf.split(tf.constant(m[order]), self._each_batch_size) for m in matrices),
                        strict=True))

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The fitting rows in `epoch`'s shuffled order (batches cut it in turn)."""
        return self.fit[np.random.default_rng([self.seed, epoch]).permutation(len(self.fit))]

    @property
    def _each_batch_size(self) -> list[int]:
        """The size of every batch of an epoch, in order: full ones, then the remainder."""
        full, rest = divmod(len(self.fit), self.batch_size)
        return [self.batch_size] * full + ([rest] if rest else [])

    @property
    def batch_sizes(self) -> list[int]:
        """The sizes an epoch's batches come in: full, then the remainder if there is one."""
        return list(dict.fromkeys(self._each_batch_size))

    def learning_rate(self, training: TrainingConfig) -> float | LearningRateSchedule:
        """The configured schedule: `learning_rate * learning_rate_decay ** epoch`.

        It steps at each epoch's end. It runs on the optimizer's own step count, so a resumed
        optimizer resumes it.
        """
        if training.learning_rate_decay == 1.0:
            return training.learning_rate
        steps_per_epoch = -(-len(self.fit) // self.batch_size)
        return keras.optimizers.schedules.ExponentialDecay(
            training.learning_rate, steps_per_epoch, training.learning_rate_decay, staircase=True)


class BestWeights:
    """A copy of some models' weights from the best epoch so far, restored when training ends."""

    def __init__(self, models: list[keras.Layer]) -> None:
        self.models = models
        self.weights: list[np.ndarray] = []

    def keep(self) -> None:
        """Remember the current weights."""
        self.weights = [w for m in self.models for w in m.get_weights()]

    def restore(self) -> None:
        """Put the remembered weights back (no-op if none were kept)."""
        start = 0
        for model in self.models if self.weights else []:
            count = len(model.get_weights())
            model.set_weights(self.weights[start : start + count])
            start += count

    def arrays(self) -> dict[str, np.ndarray]:
        """The kept weights, for a checkpoint."""
        return {f"best{i}": w for i, w in enumerate(self.weights)}

    def load(self, saved: dict[str, np.ndarray]) -> None:
        """Inverse of `arrays`."""
        self.weights = [saved[f"best{i}"] for i in range(sum(k.startswith("best") for k in saved))]


@dataclass(frozen=True)
class Decision:
    """What the label party tells every party after an epoch."""

    improved: bool  # keep this epoch's weights as the best so far
    stop: bool      # this was the last epoch

    def as_table(self) -> pa.Table:
        """The message that carries it (one row of `DECISION`)."""
        return pa.table({"improved": [self.improved], "stop": [self.stop]})


DECISION = {"improved": pa.bool_(), "stop": pa.bool_()}  # the columns of a `Decision`'s message


@dataclass
class History:
    """Per epoch: loss per task, validation AUC per task, gate use, task weights and wall time."""

    task_loss: list[list[float]] = field(default_factory=list)    # [epoch][task]
    # [epoch][task]; [] per epoch if there are no validation rows
    val_auc: list[list[float]] = field(default_factory=list)
    gates: list[list[list[float]]] = field(default_factory=list)  # [epoch][task][expert]
    task_weight: list[list[float]] = field(default_factory=list)  # [epoch][task]
    seconds: list[float] = field(default_factory=list)
    local_steps: list[int] = field(default_factory=list)  # [epoch]: the label party's

    def record(self, losses: list[np.ndarray], val_auc: list[float], gates: np.ndarray,
               task_weights: np.ndarray, started: float, local_steps: int = 0) -> None:
        """Close an epoch that began at `time.perf_counter()` value `started`.

        `local_steps`: the local updates the label party took in it (`local_updates`).
        """
        self.task_loss.append(np.mean(losses, axis=0).tolist())
        self.val_auc.append(list(val_auc))
        self.gates.append(np.asarray(gates).tolist())
        self.task_weight.append(np.asarray(task_weights).tolist())
        self.seconds.append(time.perf_counter() - started)
        self.local_steps.append(local_steps)

    def last_epoch_line(self, tasks: list[str], rows: int) -> str:
        """The last epoch in one line.

        It gives the loss and validation AUC per task, `rows` fitted per second, and the local
        updates taken if any.
        """
        losses = ", ".join(f"{t} {v:.4f}" for t, v in zip(tasks, self.task_loss[-1], strict=True))
        aucs = ", ".join(f"{t} {v:.4f}" for t, v in zip(tasks, self.val_auc[-1], strict=False))
        local = f"; {self.local_steps[-1]:,} local steps" if self.local_steps[-1] else ""
        return (f"epoch {len(self.seconds)}: loss {losses}; validation AUC {aucs or 'none'}; "
                f"{rows / self.seconds[-1]:,.0f} rows/s{local}")

    @property
    def best_epoch(self) -> int:
        """The 1-based epoch with the best mean validation AUC (the first on ties).

        It is the last epoch when there are no validation rows.
        """
        if not self.val_auc or not self.val_auc[-1]:
            return len(self.val_auc)
        return int(np.argmax([np.mean(a) for a in self.val_auc])) + 1

    def decide(self, patience: int, last_epoch: bool) -> Decision:
        """Early stopping on the mean validation AUC over tasks, after the epoch just recorded."""
        epochs, best = len(self.val_auc), self.best_epoch
        return Decision(improved=best == epochs, stop=last_epoch or epochs - best >= patience)

    def arrays(self) -> dict[str, np.ndarray]:
        """The history as arrays, for a checkpoint."""
        return {"task_loss": np.array(self.task_loss), "val_auc": np.array(self.val_auc),
                "gates": np.array(self.gates), "task_weight": np.array(self.task_weight),
                "seconds": np.array(self.seconds), "local_steps": np.array(self.local_steps)}

    @classmethod
    def from_arrays(cls, saved: dict[str, np.ndarray]) -> History:
        """Inverse of `arrays`."""
        return cls(saved["task_loss"].tolist(), saved["val_auc"].tolist(), saved["gates"].tolist(),
                   saved["task_weight"].tolist(), saved["seconds"].tolist(),
                   saved["local_steps"].tolist())

    def as_json(self, tasks: list[str]) -> dict[str, object]:
        """The history for the report, per task where it applies.

        Loss and validation AUC curves per task, task weights, gate use per task (mean weight per
        expert, entropy), the epoch whose weights were kept, and the time per epoch.
        """
        losses = np.array(self.task_loss).reshape(-1, len(tasks))
        weights = np.array(self.task_weight).reshape(-1, len(tasks))
        gates = np.array(self.gates).reshape(len(self.gates), len(tasks), -1)
        entropy = -np.sum(gates * np.log(np.clip(gates, 1e-12, None)), axis=2)
        aucs = np.array([a for a in self.val_auc if a]).reshape(-1, len(tasks))
        return {
            "loss": np.sum(losses * weights, axis=1).tolist(),
            "task_loss": {t: losses[:, j].tolist() for j, t in enumerate(tasks)},
            "val_auc": {t: aucs[:, j].tolist() for j, t in enumerate(tasks)},
            "best_epoch": self.best_epoch,
            "task_weight": {t: weights[:, j].tolist() for j, t in enumerate(tasks)},
            "gate_mean": {t: gates[:, j].tolist() for j, t in enumerate(tasks)},
            "gate_entropy": {t: entropy[:, j].tolist() for j, t in enumerate(tasks)},
            "seconds": self.seconds,
            "local_steps": self.local_steps,
        }
