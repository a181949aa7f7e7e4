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
from typing import NoReturn

import keras
import numpy as np
import pyarrow as pa
import tensorflow as tf

from splitrec_core.channel import Channel, Kind, ProtocolError, array_table, table_array
from splitrec_core.channel.expect import Due, check_array
from splitrec_core.checkpoint import Checkpoints
from splitrec_core.config import Config
from splitrec_core.epochs import History, Plan
from splitrec_core.event_matrix import EventMatrix
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

    They cross in `dtype`, and are always computed on in float32. float16 halves the bytes;
    TensorFlow converts it, since numpy's float16 conversion is several times slower
    (benchmarks/RESULTS.md). int8 cuts them to about a quarter: each row crosses as int8 values
    and one float32 scale, max |x| / 127 of that row (symmetric, rounded to nearest). Every value
    then comes back within half its row's scale of what was sent (up to float32 rounding), exact
    zeros stay zero, and a row of zeros comes back zeros (its scale is zero). A row holding a
    non-finite value gets a non-finite scale, so it comes back non-finite and the receiver's
    checks see it. An int8 message is still one Arrow table (the values a fixed-size list
    column, the scales a float32 column), counted like every other.
    """

    def __init__(self, dtype: str = "float32") -> None:
        self.dtype = dtype

    def pack(self, array: np.ndarray | tf.Tensor) -> pa.Table:
        """What to send for `array` (float32)."""
        if self.dtype == "int8":
            values, scales = _quantise_rows(array)
            return array_table(values).append_column("scale", pa.array(scales))
        if self.dtype == "float16":
            return array_table(tf.cast(array, tf.float16).numpy())
        return array_table(array.numpy() if isinstance(array, tf.Tensor) else array)

    def unpack(self, table: pa.Table) -> np.ndarray | tf.Tensor:
        """The float32 array a received message carries."""
        array = table_array(table)
        if self.dtype == "int8":
            return _dequantise_rows(array, table_array(table, "scale"))
        return tf.cast(array, tf.float32) if self.dtype == "float16" else array

    def as_received(self, array: np.ndarray | tf.Tensor) -> np.ndarray | tf.Tensor:
        """What the peer unpacks from `pack(array)`, without the trip through Arrow.

        The leakage audit scores this: the gradients a feature party actually gets.
        """
        if self.dtype == "int8":
            return _dequantise_rows(*_quantise_rows(array))
        if self.dtype == "float16":
            return tf.cast(tf.cast(array, tf.float16), tf.float32)
        return array


SMALLEST_SCALED = np.float32(1e-30)  # far above 127 / float32's largest value


def _quantise_rows(array: np.ndarray | tf.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The int8 values `[rows, width]` and float32 scales `[rows]` of `array`'s rows (`Wire`)."""
    array = np.asarray(array.numpy() if isinstance(array, tf.Tensor) else array, np.float32)
    # A row's maximum over a Fortran-ordered copy is a maximum of whole columns, element by
    # element: several times faster than along the rows of an array this narrow.
    largest = np.asfortranarray(np.abs(array)).max(axis=1, keepdims=True)
    # A row of zeros (or of values so small that 127 over them overflows) crosses as zeros.
    inverse = np.divide(np.float32(127), largest, out=np.zeros_like(largest),
                        where=largest > SMALLEST_SCALED)
    with np.errstate(invalid="ignore"):  # a non-finite row: its scale carries that across
        values = np.rint(array * inverse).astype(np.int8)
    return values, largest[:, 0] / np.float32(127)


def _dequantise_rows(values: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """The float32 rows `[rows, width]` that int8 `values` and their rows' `scales` stand for."""
    with np.errstate(invalid="ignore"):  # a non-finite scale stays non-finite, for the checks
        return values * scales[:, None]


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

    It receives a message of `kind` from `peer` whenever the one in hand is used up (both ends
    know each batch's rows from the shared plan, so no message says where one batch ends). Each
    message is checked before its rows reach a model: float32 rows of the cut `width`, all
    finite, exactly the rows of `per_message` batches (or of the batches left in the epoch: see
    `end_epoch`). Anything else is a `ProtocolError` naming the peer and the kind.
    """

    def __init__(self, channel: Channel, kind: Kind, peer: str, width: int, wire: Wire = FLOAT32,
                 per_message: int = 1) -> None:
        self.channel, self.kind, self.peer, self.wire = channel, kind, peer, wire
        self.due, self.per_message = Due(np.float32, width, finite=True), per_message
        self.held: np.ndarray | tf.Tensor | None = None
        self.offset = 0
        self.batches = 0  # batches taken from the message in hand

    def take(self, rows: int) -> np.ndarray | tf.Tensor:
        """The next `rows` rows, receiving a message first if the one in hand is used up."""
        if self.held is None or self.offset == len(self.held):
            if self.held is not None and self.batches != self.per_message:
                self._refuse(f"of {len(self.held)} rows where {self.per_message} batches' rows "
                             f"were due")
            self.held, self.offset, self.batches = self._receive(), 0, 0
        if self.offset + rows > len(self.held):
            left = len(self.held) - self.offset
            self._refuse(f"of {len(self.held)} rows, which ended after {left} of the {rows} rows "
                         f"due (do the parties' batch plans differ?)")
        taken = self.held[self.offset:self.offset + rows]
        self.offset, self.batches = self.offset + rows, self.batches + 1
        if self.batches == self.per_message and self.offset != len(self.held):
            self._refuse(f"of {len(self.held)} rows, more than {self.per_message} batches' "
                         f"{self.offset}")
        return taken

    def end_epoch(self) -> None:
        """Check that the epoch's last message held no rows beyond its batches; start afresh."""
        if self.held is not None and self.offset != len(self.held):
            self._refuse(f"of {len(self.held)} rows, more than the epoch's last batches' "
                         f"{self.offset}")
        self.held = None

    def _receive(self) -> np.ndarray | tf.Tensor:
        """The float32 rows the next message carries, once they are what is due."""
        table = self.channel.recv(self.kind, self.peer)
        rows = unpacked(self.wire, table, self.peer, self.kind)
        check_array(rows, self.peer, self.kind, self.due)
        return rows

    def _refuse(self, what: str) -> NoReturn:
        raise ProtocolError(f"{self.peer} sent '{self.kind.value}' {what}")


def unpacked(wire: Wire, table: pa.Table, frm: str, kind: Kind) -> np.ndarray | tf.Tensor:
    """The float32 array `wire` reads from a message; a table it cannot read is an error."""
    try:
        return wire.unpack(table)
    except (KeyError, ValueError, TypeError, pa.ArrowException, tf.errors.OpError) as error:
        first = (str(error).strip() or type(error).__name__).splitlines()[0]
        raise ProtocolError(f"{frm} sent '{kind.value}' that is not rows this wire reads "
                            f"({first})") from None


@dataclass(frozen=True)
class LoopSettings:
    """What a party's training loop runs on besides its trainer and its channel.

    Attributes:
        train: its training rows (read whole, or streamed; the label party's events).
        test: its test rows, embedded or scored after the last epoch.
        plan: the epochs every party shares (batches, validation rows, patience).
        checkpoints: where it keeps the state to resume from.
        start_epoch: the epoch every party resumes after (0: from scratch).
        wire: how embeddings and gradients cross the channel.
        per_message: training batches per message.
        ahead: messages a feature party embeds before it waits for gradients (see
            `bottom_epoch`); the label party does not read it.
    """

    train: FeatureMatrix | StreamedFeatures | EventMatrix
    test: FeatureMatrix | StreamedFeatures | EventMatrix
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
        activity_auc: with events, the audit's activity attack (None otherwise).
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
    activity_auc: float | None = None
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
        activity_auc=run.activity_auc,
        resumed_after_epoch=run.resumed_after_epoch,
    )
