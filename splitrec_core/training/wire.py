"""How embeddings and gradients cross the channel: their number type, and batches per message.

`Wire` packs arrays as float32, float16 or int8 (a float32 scale per row); `BatchesOut` sends
several batches' arrays as one message and `BatchesIn` hands them out again, batch by batch,
checking each message before its rows reach a model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

import numpy as np
import pyarrow as pa
import tensorflow as tf

from splitrec_core.channel import Channel, Kind, ProtocolError, array_table, table_array
from splitrec_core.channel.expect import Due, check_array


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


class BatchesOut:
    """Arrays for one peer, sent `per_message` at a time as one message (their rows stacked).

    Each message costs the same CPU at both ends whatever its size (about 0.18 ms over Flight,
    benchmarks/RESULTS.md), so fewer, larger messages leave more of a party's time for its step.
    Call `flush` at the end of an epoch: the receiver's `BatchesIn` takes rows as it needs them.
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


class BatchesIn:
    """The other end of a `BatchesOut`: hands out arrays of the row counts asked for.

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

    def ready(self) -> bool:
        """Whether `take` would return now: rows are in hand, or a message waits."""
        return (self.held is not None and self.offset < len(self.held)
                or self.channel.ready(self.peer))

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
