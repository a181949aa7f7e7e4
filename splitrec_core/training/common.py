"""What every role builds identically from the shared settings.

The models, seeded from the shared seed; the task weighting; the wire format of embeddings and
gradients; what a party's loop runs on; the result files.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pyarrow as pa
import tensorflow as tf

from splitrec_core.channel import array_table, table_array
from splitrec_core.checkpoint import Checkpoints
from splitrec_core.config import Config
from splitrec_core.epochs import History, Plan
from splitrec_core.features import FeatureMatrix, Transform
from splitrec_core.io import atomic_path, write_json, write_parquet
from splitrec_core.model import TaskWeighting, bottom_model, top_model
from splitrec_core.results import TrainResult
from splitrec_core.streaming import StreamedFeatures

_SEEDING = threading.Lock()  # Keras' seed is process-wide: parties on threads build in turn


def _model_seed(seed: int, model: str) -> int:
    """Each model's own initialisation seed: a party builds its part alone, and identically."""
    return (seed * 1_000_003 + zlib.crc32(model.encode())) % 2**31


def party_order(cfg: Config, present: Collection[str]) -> list[str]:
    """The parties in `present`, label party first: the order of the top's inputs."""
    return [p for p in cfg.order if p in present]


def build_bottom(cfg: Config, party: str, transform: Transform) -> keras.Model:
    """`party`'s bottom, seeded from the shared seed and its name."""
    with _SEEDING:
        keras.utils.set_random_seed(_model_seed(cfg.training.seed, party))
        return bottom_model(party, transform.vocab_sizes(), len(transform.numeric), cfg.model,
                            cfg.privacy.clip_norm)


def build_top(cfg: Config, parties: list[str]) -> keras.Model:
    """The MMoE top over `parties`' embeddings, seeded from the shared seed.

    A label party without feature columns adds an empty embedding.
    """
    empty = [] if cfg.label.feature_columns else [cfg.label_party]
    with _SEEDING:
        keras.utils.set_random_seed(_model_seed(cfg.training.seed, "top"))
        return top_model(parties, len(cfg.tasks), cfg.model, empty)


def task_weighting(cfg: Config) -> TaskWeighting:
    """The configured combination of the task losses (static, or learned by uncertainty)."""
    learned = cfg.training.loss_weighting == "uncertainty"
    return TaskWeighting([t.weight for t in cfg.tasks], learned, name="task_weighting")


class Wire:
    """How embeddings and gradients cross the channel.

    They cross in `dtype` (float16 halves the bytes), and are always computed on in float32.
    TensorFlow converts: numpy's float16 conversion is several times slower
    (benchmarks/RESULTS.md).
    """

    def __init__(self, dtype: str = "float32") -> None:
        self.half = dtype == "float16"

    def pack(self, array: np.ndarray | tf.Tensor) -> pa.Table:
        """What to send for `array` (float32)."""
        if self.half:
            return array_table(tf.cast(array, tf.float16).numpy())
        return array_table(array.numpy() if isinstance(array, tf.Tensor) else array)

    def unpack(self, table: pa.Table) -> np.ndarray | tf.Tensor:
        """The float32 array a received message carries."""
        array = table_array(table)
        return tf.cast(array, tf.float32) if self.half else array


FLOAT32 = Wire()


class Outbox:
    """Arrays for one peer, sent `per_message` at a time as one message (their rows stacked).

    Each message costs the same CPU at both ends whatever its size (about 0.18 ms over Flight,
    benchmarks/RESULTS.md), so fewer, larger messages leave more of a party's time for its step.
    Call `flush` at the end of an epoch: the receiver's `Inbox` takes rows as it needs them.
    """

    def __init__(self, send: Callable[[pa.Table], None], wire: Wire = FLOAT32,
                 per_message: int = 1) -> None:
        self.send, self.wire, self.per_message = send, wire, per_message
        self.pending: list[np.ndarray | tf.Tensor] = []

    def put(self, array: np.ndarray | tf.Tensor) -> None:
        """Queue `array`, sending the queue once it holds `per_message` arrays."""
        self.pending.append(array)
        if len(self.pending) == self.per_message:
            self.flush()

    def flush(self) -> None:
        """Send what is queued, if anything, as one message."""
        if self.pending:
            stacked = self.pending[0] if len(self.pending) == 1 else tf.concat(self.pending, 0)
            self.send(self.wire.pack(stacked))
            self.pending = []


class Inbox:
    """The other end of an `Outbox`: hands out arrays of the row counts asked for.

    It receives a message whenever the one in hand is used up (both ends know each batch's rows
    from the shared plan, so no message says where one batch ends).
    """

    def __init__(self, receive: Callable[[], pa.Table], wire: Wire = FLOAT32) -> None:
        self.receive, self.wire = receive, wire
        self.held: np.ndarray | tf.Tensor | None = None
        self.offset = 0

    def take(self, rows: int) -> np.ndarray | tf.Tensor:
        """The next `rows` rows, receiving a message first if the one in hand is used up."""
        if self.held is None or self.offset == len(self.held):
            self.held, self.offset = self.wire.unpack(self.receive()), 0
        if self.offset + rows > len(self.held):
            raise RuntimeError(f"a message ended after {len(self.held) - self.offset} of the "
                               f"{rows} rows expected: the parties' batch plans differ")
        taken = self.held[self.offset:self.offset + rows]
        self.offset += rows
        return taken


@dataclass(frozen=True)
class LoopSettings:
    """What a party's training loop runs on besides its trainer and its channel.

    Attributes:
        train: its training rows (read whole, or streamed).
        test: its test rows, embedded or scored after the last epoch.
        plan: the epochs every party shares (batches, validation rows, patience).
        checkpoints: where it keeps the state to resume from.
        start_epoch: the epoch every party resumes after (0: from scratch).
        wire: how embeddings and gradients cross the channel.
        per_message: training batches per message.
        ahead: messages a feature party embeds before it waits for gradients (see
            `bottom_epoch`); the label party does not read it.
    """

    train: FeatureMatrix | StreamedFeatures
    test: FeatureMatrix | StreamedFeatures
    plan: Plan
    checkpoints: Checkpoints
    start_epoch: int = 0
    wire: Wire = FLOAT32
    per_message: int = 1
    ahead: int = 0


@dataclass(frozen=True)
class TrainedRun:
    """What a finished training run hands to `write_result`.

    Attributes:
        history: its epochs' losses, validation AUCs and gate use.
        probabilities: the test rows' predictions `[rows, tasks]`, in common-position order.
        fit_rows: rows fitted per epoch (the training rows less the validation rows).
        startup_s: seconds spent tracing (and with XLA compiling) before the first batch.
        train_s: seconds of training, validation included.
        cpu_s: the CPU seconds every process of the run spent over `train_s`, summed
            (`total_cpu_s`).
        models: the saved models by name.
        channel: traffic per message kind.
        leakage: the leakage audit of the gradients the label party sent.
        resumed_after_epoch: the epoch every party had checkpointed (0: from scratch).
    """

    history: History
    probabilities: np.ndarray
    fit_rows: int
    startup_s: float
    train_s: float
    cpu_s: float
    models: dict[str, Path]
    channel: dict[str, dict[str, int]] = field(default_factory=dict)
    leakage: dict[str, dict[str, float]] = field(default_factory=dict)
    resumed_after_epoch: int = 0


def save_model(model: keras.Model, path: Path) -> Path:
    """Save `model` atomically to `path` (a `.keras` file)."""
    with atomic_path(path) as tmp:
        model.save(tmp)
    return path


def write_result(cfg: Config, run: TrainedRun, *, label_test: Path, out_dir: Path) -> TrainResult:
    """Write the run's test predictions and training history to `out_dir`.

    The predictions are in common-position order, the positions those of `label_test` (the label
    party's test features).
    """
    tasks = cfg.task_names
    columns = {"position": FeatureMatrix.positions(label_test)}
    columns |= {f"p:{t}": run.probabilities[:, j] for j, t in enumerate(tasks)}
    epochs_run = len(run.history.seconds)
    rows_fitted = (epochs_run - run.resumed_after_epoch) * run.fit_rows
    return TrainResult(
        models=run.models,
        predictions=write_parquet(pa.table(columns), out_dir / "predictions.parquet"),
        history=write_json(run.history.as_json(tasks), out_dir / "history.json"),
        rows_per_s=rows_fitted / run.train_s,
        cpu_s_per_1k_rows=1000 * run.cpu_s / rows_fitted,
        train_s=run.train_s,
        startup_s=run.startup_s,
        epochs_run=epochs_run,
        best_epoch=run.history.best_epoch,
        channel=run.channel,
        leakage=run.leakage,
        resumed_after_epoch=run.resumed_after_epoch,
    )
