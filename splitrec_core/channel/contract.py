"""What a channel is: typed messages between named parties, counted per kind, within limits.

Only the `Kind`s listed here may cross; every channel counts bytes and messages per kind
(`ChannelStats`); `Limits` bound a message and what a party holds of a peer's. A peer that
does not answer is a `PeerError`; one that breaks the protocol a `ProtocolError`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import pyarrow as pa

from splitrec_core.errors import InputError


class Kind(StrEnum):
    """Every kind of message that may cross between parties; nothing else can be sent."""

    PSI_BLINDED = "psi_blinded"                # H(id)^k of the sender's own IDs, shuffled
    PSI_DOUBLE_BLINDED = "psi_double_blinded"  # the leader's blinded list raised to the
    #                                            follower's key
    PSI_POSITIONS = "psi_positions"            # which of a follower's sent points are shared, in
    #                                            common order
    PSI_RR22_SESSION = "psi_rr22_session"      # the label party's random name for one RR22
    #                                            pair's session on spu's link
    PSI_RR22 = "psi_rr22"                      # RR22 PSI over spu's own link (`psi_rr22`): not
    #                                            sent through a channel; counted at the socket
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


_KINDS = frozenset(kind.value for kind in Kind)


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


class ProtocolError(PeerError):
    """A peer sent what the protocol does not allow at that point; names the peer and the kind.

    A kind other than the one due, a message over the maximum size, or a table of the wrong
    type, shape or row count, or with values that are not finite. It is raised before the
    message's values reach a model or a file, and a stage is not retried for it: a peer that
    breaks the protocol once will break it again.
    """


class RunStopped(ProtocolError):
    """A peer stopped the run for a reason a retry cannot mend, and said which.

    It stopped because a party broke the protocol or because of bad input; told so, the other
    parties stop at once instead of retrying a stage the peer will not join again.
    """


def stop_reason(error: BaseException | None) -> str | None:
    """What a party tells its peers when `error` stops its part of a run; None: just goodbye.

    Only what a retry cannot mend. A protocol violation names a party and a message kind (a
    feature party's stop reaches the others only through the label party, which passes it on);
    bad input is this party's own files, so its details stay here.
    """
    if isinstance(error, ProtocolError):  # (a peer's stop too: the hub passes it on)
        return (str(error).strip() or type(error).__name__).splitlines()[0][:500]
    if isinstance(error, InputError):
        return "bad input (this party's own files or settings: its log says which)"
    return None


MB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """How large one message may be, and how much a party holds of what a peer sent ahead.

    Every party of a run must have the same: a party refuses to send a message its peers would
    refuse to receive. The inbox bound is explained in `channel.inbox`.
    """

    max_message_bytes: int = 256 * MB  # a message's Arrow IPC bytes, the size a channel counts
    inbox_bytes: int = 16 * MB         # what waits to be taken from one peer (or one message)

    @classmethod
    def in_mb(cls, max_message_mb: int, inbox_mb: int) -> Limits:
        """The limits in MiB, as a run's `[channel]` section gives them (its keys, by name)."""
        return cls(max_message_mb * MB, inbox_mb * MB)

    def check_outgoing(self, kind: Kind, to: str, nbytes: int) -> None:
        """Refuse to send `to` a message of `kind` that is larger than a peer may receive.

        The setting is the user's to change, so it is an `InputError`.
        """
        if nbytes > self.max_message_bytes:
            raise InputError("[channel] max_message_mb", None,
                             f"a '{kind.value}' message to {to} of {nbytes / MB:.1f} MB is over "
                             f"the maximum message size of {self.max_message_bytes / MB:.0f} MB "
                             f"(raise it at every party)")

    def check_incoming(self, kind: str, frm: str, nbytes: int) -> None:
        """Refuse a message of `kind` from `frm` that is larger than the maximum."""
        if nbytes > self.max_message_bytes:
            raise ProtocolError(f"{frm} sent a '{kind}' message of {nbytes / MB:.1f} MB, over the "
                                f"maximum message size of {self.max_message_bytes / MB:.0f} MB")


def expect_kind(frm: str, due: Kind, arrived: str) -> None:
    """Refuse a message of another kind than the one due.

    Every protocol takes each peer's messages in the order that peer sent them, so the next
    message from a peer is always of the kind the receiver waits for.
    """
    if arrived != due.value:
        what = f"'{arrived}'" if arrived in _KINDS else f"a message of unknown kind {arrived!r}"
        raise ProtocolError(f"{frm} sent {what} where '{due.value}' was due")


class Channel(Protocol):
    """One party's view of the network: send to and receive from other parties by name.

    Every transport counts what the party sends and what it receives, so a caller never asks
    which transport it holds.
    """

    me: str

    def send(self, kind: Kind, to: str, table: pa.Table) -> None:
        """Send `table` to party `to` as a message of `kind`."""

    def recv(self, kind: Kind, frm: str) -> pa.Table:
        """Block until the next message from party `frm` arrives and return it.

        It must be of `kind` (else `ProtocolError`): a party takes each peer's messages in the
        order the peer sent them.
        """

    def ready(self, frm: str) -> bool:
        """Whether `recv` from party `frm` would return (or fail) now, without waiting.

        A party that has other work to do while it waits (local training steps) asks this
        first; it never takes a message.
        """

    def sent(self) -> ChannelStats:
        """What this party has sent so far."""

    def received(self) -> ChannelStats:
        """What this party has received so far."""

    def count_beside(self, kind: Kind, sent: int, received: int) -> None:
        """Count what this party sent to and received from a peer outside the channel."""

    def close(self) -> None:
        """Let go of the connections to the other parties (the channel is not used again)."""
