"""What a channel is: typed messages between named parties, counted per kind.

Every channel counts bytes and messages per kind. The framing the byte-stream transports share
(process pipes, Flight) is here too.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import numpy as np
import pyarrow as pa


class Kind(StrEnum):
    """Every kind of message that may cross between parties; nothing else can be sent."""

    PSI_BLINDED = "psi_blinded"                # H(id)^k of the sender's own IDs, shuffled
    PSI_DOUBLE_BLINDED = "psi_double_blinded"  # the leader's blinded list raised to the
    #                                            follower's key
    PSI_POSITIONS = "psi_positions"            # which of a follower's sent points are shared, in
    #                                            common order
    SPLIT_MASK = "split_mask"                  # train/test flag per common position (from the
    #                                            label party)
    EMBEDDING = "embedding"                    # a feature party's cut-layer output for a training
    #                                            batch
    GRADIENT = "gradient"                      # dL/dh for that batch, returned by the label party
    VALIDATION_EMBEDDING = "validation_embedding"  # cut-layer output (noised as in training) for
    #                                            the held-out training rows, to choose the epoch
    EARLY_STOPPING = "early_stopping"          # after each epoch, from the label party: keep these
    #                                            weights as the best so far? stop?
    EVAL_EMBEDDING = "eval_embedding"          # cut-layer output for rows being scored (no
    #                                            gradient back)
    RESUME = "resume"                          # before training: the epochs a feature party has
    #                                            checkpointed; the label party's answer, the epoch
    #                                            every party resumes from
    REGISTRY = "registry"                      # parties apart, after export: the version's test
    #                                            metrics, leakage audit and promotion verdict from
    #                                            the label party; each feature party's confirmation.
    #                                            Before scoring: the version to score with


@dataclass
class ChannelStats:
    """Bytes and messages per kind that crossed a channel."""

    bytes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    messages: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, kind: Kind, nbytes: int) -> None:
        """Count one message of `kind` carrying `nbytes`."""
        self.bytes[kind.value] += nbytes
        self.messages[kind.value] += 1

    def as_dict(self) -> dict[str, dict[str, int]]:
        """`{kind: {"bytes": n, "messages": n}}`, kinds sorted, for reports."""
        return {k: {"bytes": self.bytes[k], "messages": self.messages[k]}
                for k in sorted(self.bytes)}

    @staticmethod
    def merge(*reports: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        """Sum several `as_dict()` reports."""
        total: dict[str, dict[str, int]] = {}
        for report in reports:
            for kind, counts in report.items():
                slot = total.setdefault(kind, {"bytes": 0, "messages": 0})
                slot["bytes"] += counts["bytes"]
                slot["messages"] += counts["messages"]
        return dict(sorted(total.items()))


class PeerError(RuntimeError):
    """A peer could not be reached, refused us, differs from us, or went silent; names the peer."""


class Channel(Protocol):
    """One party's view of the network: send to and receive from other parties by name.

    Every transport counts what the party sends and what it receives, so a caller never asks
    which transport it holds.
    """

    me: str

    def send(self, kind: Kind, to: str, table: pa.Table) -> None:
        """Send `table` to party `to` as a message of `kind`."""

    def recv(self, kind: Kind, frm: str) -> pa.Table:
        """Block until the next message of `kind` from party `frm` arrives and return it."""

    def sent(self) -> ChannelStats:
        """What this party has sent so far."""

    def received(self) -> ChannelStats:
        """What this party has received so far."""

    def close(self) -> None:
        """Let go of the connections to the other parties (the channel is not used again)."""


class CountingChannel:
    """What every transport's channel keeps alike: party `me`, and what it sent and received.

    A transport adds each message it sends to `_sent` and each it hands out to `_received`.
    """

    def __init__(self, me: str) -> None:
        self.me = me
        self._sent, self._received = ChannelStats(), ChannelStats()

    def sent(self) -> ChannelStats:
        """What this party sent."""
        return self._sent

    def received(self) -> ChannelStats:
        """What this party received."""
        return self._received


def payload_bytes(kind: Kind, table: pa.Table) -> pa.Buffer:
    """`table` as the Arrow IPC stream a channel carries and counts.

    Refuses a `kind` that is not a `Kind`: nothing else may cross.
    """
    if not isinstance(kind, Kind):
        raise ValueError(f"unknown message kind {kind!r}")
    return ipc_bytes(table)


def ipc_bytes(table: pa.Table) -> pa.Buffer:
    """`table` as one Arrow IPC stream: schema, batches, end marker (what a transport carries)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


# The framing every byte-stream transport shares (process pipes, Flight): a message is its kind,
# a newline and the Arrow IPC stream, so one stream carries tables of any schema.

_KIND_HEAD = 32  # a kind's name and its newline fit in this many bytes


def frame(kind: Kind, table: pa.Table) -> bytes:
    r"""The message that carries `table` as `kind`: `kind\n<Arrow IPC stream>`."""
    payload = payload_bytes(kind, table)  # refuses a kind that is not a `Kind`, first
    return kind.value.encode() + b"\n" + payload.to_pybytes()


def split_frame(message: memoryview) -> tuple[str, memoryview]:
    """A received message's kind, as its sender wrote it, and its payload.

    The receiver checks the kind: a peer may send anything.
    """
    head = bytes(message[:_KIND_HEAD])
    end = head.find(b"\n")
    if end < 0:
        raise ValueError(f"a message without a kind line ({head!r}...)")
    return head[:end].decode(errors="replace"), message[end + 1 :]


def payload_size(message: bytes) -> int:
    """The bytes of a framed message's payload: what the sender counts, as the receiver does."""
    return split_frame(memoryview(message))[1].nbytes


def read_table(payload: memoryview | pa.Buffer) -> pa.Table:
    """The table a payload (an Arrow IPC stream) carries."""
    return pa.ipc.open_stream(pa.py_buffer(payload)).read_all()


def array_table(array: np.ndarray, name: str = "value") -> pa.Table:
    """Wrap a 1-D or 2-D numpy array as a one-column Arrow table (2-D as fixed-size lists)."""
    if array.ndim == 1:
        return pa.table({name: array})
    flat = pa.array(np.ascontiguousarray(array).reshape(-1))
    return pa.table({name: pa.FixedSizeListArray.from_arrays(flat, array.shape[1])})


def table_array(table: pa.Table, name: str = "value") -> np.ndarray:
    """Inverse of `array_table`."""
    column = table.column(name).combine_chunks()
    if pa.types.is_fixed_size_list(column.type):
        width = column.type.list_size
        return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
    return column.to_numpy(zero_copy_only=False)
