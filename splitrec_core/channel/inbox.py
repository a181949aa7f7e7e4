"""What one peer has sent and this party has not taken yet: in the order sent, and bounded.

`Incoming` is one peer's side of a transport (a Flight stream, a process pipe): a thread of the
transport reads the stream and `deliver`s each message into the peer's `PeerInbox`; the party
`take`s them. Every transport with a stream per peer reads it this way, so none depends on its
socket buffers for the argument below.

The bound: the messages waiting hold at most `Limits.inbox_bytes`, or one message if that one is
larger (so at most the larger of the bound and the maximum message size). The thread that reads
the peer's stream (`put`) waits while the next message would not fit, so it stops reading; the
transport's flow control then stops the peer's writes, and the peer's `send` blocks until this
party takes what waits. So what a peer sends ahead costs this party at most the bound per peer
(plus the transport's own buffers), however fast it sends.

Why it cannot deadlock. Within a party: the reading thread waits only while a message waits in
the inbox, and the party always takes the oldest one (every protocol takes a peer's messages in
the order the peer sent them; another kind than the one due is a `ProtocolError`), so whenever
the party waits for a message the inbox is empty, and the reading thread admits the next message
whatever its size. Between two parties: both must be blocked sending, each with its messages
waiting untaken at the other. Most protocols never send both ways at once: only one side sends
(validation, test and scoring embeddings, the split mask, the registry's messages), or a party
sends one message and waits for the answer (resume, early stopping). In PSI every party sends a
whole list before it reads, so the leader takes every follower's list before it sends its own.
In training a feature party sends at most `embed_ahead + 1` messages of embeddings whose
gradients have not come back; for both ends to be blocked, the label party must be blocked
sending the gradients of message k with gradients of an earlier message untaken at the feature
party (so k is at least j - embed_ahead + 1, if j is the message the feature party is blocked
sending) and embeddings of a later message untaken at itself (so k is at most j - 2): that needs
`embed_ahead` of 3 or more, and the settings allow at most 2. So no inbox, however small, stops
a run. A party that takes nothing for `patience_s` while messages wait is not reading at all:
its inbox then closes, and its peer's `send` fails naming it instead of blocking for ever.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

from splitrec_core.channel.contract import (
    Kind,
    Limits,
    PeerError,
    ProtocolError,
    RunStopped,
    expect_kind,
)
from splitrec_core.channel.framing import split_frame


class PeerInbox:
    """One peer's messages, waiting to be taken in the order they came; at most `limit` bytes."""

    def __init__(self, limit: int, patience_s: float) -> None:
        self.limit, self.patience_s = limit, patience_s
        self._waiting: deque[tuple[str, memoryview]] = deque()
        self._changed = threading.Condition()
        self.held = 0    # bytes waiting now
        self.peak = 0    # the most bytes that ever waited
        self.taken = 0   # messages taken so far
        self.closed = False

    def put(self, kind: str, payload: memoryview) -> bool:
        """Add the next message, first waiting while it would not fit.

        Returns False if the inbox closed instead, or nothing was taken for `patience_s`
        (then it closes): stop reading the stream.
        """
        size = payload.nbytes
        with self._changed:
            deadline, taken = time.monotonic() + self.patience_s, self.taken
            while self._waiting and self.held + size > self.limit and not self.closed:
                if self.taken != taken:  # the party took something: it is reading
                    deadline, taken = time.monotonic() + self.patience_s, self.taken
                left = deadline - time.monotonic()
                if left <= 0:
                    self.closed = True
                    return False
                self._changed.wait(left)
            if self.closed:
                return False
            self._waiting.append((kind, payload))
            self.held += size
            self.peak = max(self.peak, self.held)
            self._changed.notify_all()
            return True

    def take(self, timeout_s: float) -> tuple[str, memoryview] | None:
        """The oldest message (its kind and payload), waiting up to `timeout_s` for one.

        None if none came in time, or none will come (the inbox closed and is empty).
        """
        with self._changed:
            deadline = time.monotonic() + timeout_s
            while not self._waiting:
                left = deadline - time.monotonic()
                if self.closed or left <= 0:
                    return None
                self._changed.wait(left)
            kind, payload = self._waiting.popleft()
            self.held -= payload.nbytes
            self.taken += 1
            self._changed.notify_all()
            return kind, payload

    def ready(self) -> bool:
        """Whether `take` would return now: a message waits, or none will come."""
        with self._changed:
            return bool(self._waiting) or self.closed

    def close(self) -> None:
        """No more messages will come: wake whoever waits (what waits can still be taken)."""
        with self._changed:
            self.closed = True
            self._changed.notify_all()


@dataclass
class Incoming:
    """One peer's stream as this party receives it: its inbox, and why the stream ended if it did.

    The transport's reading thread `deliver`s what arrives (or `fail`s the stream); the party
    `take`s messages in the order sent.
    """

    peer: str
    limits: Limits = Limits()
    patience_s: float = 600.0  # how long what waits in the inbox may go untaken
    inbox: PeerInbox = field(init=False)
    failure: str | None = None  # why the stream is over, if it is
    violation: ProtocolError | None = None  # what the peer sent that ended it, if it did

    def __post_init__(self) -> None:
        self.inbox = PeerInbox(self.limits.inbox_bytes, self.patience_s)

    def deliver(self, message: memoryview) -> bool:
        """Put a message from the peer in the inbox, waiting while the inbox is full.

        False if the stream must end: the message has no kind or is over the maximum size, or
        it could not be put (the stream failed, or nothing was taken for `patience_s`).
        """
        try:
            kind, payload = split_frame(message)
            self.limits.check_incoming(kind, self.peer, payload.nbytes)
        except ValueError as error:
            self.fail(ProtocolError(f"{self.peer} sent {error}"))
            return False
        except ProtocolError as error:
            self.fail(error)
            return False
        if not self.inbox.put(kind, payload):
            self.fail(f"sent more than was taken from it within {self.patience_s:.0f} s (is "
                      f"the party that should take it stuck?), so its stream was closed")
            return False
        return True

    def fail(self, why: str | ProtocolError) -> None:
        """Mark the stream over for `why` (the first reason stays) and wake whoever waits."""
        if self.failure is None:
            self.failure = str(why)
            if isinstance(why, ProtocolError):
                self.violation = why
        self.inbox.close()

    def take(self, me: str, kind: Kind, timeout_s: float, where: str) -> memoryview:
        """The payload of the peer's next message, which must be of `kind`.

        `me` is this party, `where` the peer as errors name it. A peer that broke the protocol,
        a stream that ended and a wait past `timeout_s` are errors naming the peer.
        """
        arrived = self.inbox.take(timeout_s)
        if arrived is None:
            if isinstance(self.violation, RunStopped):
                raise self.violation
            if self.violation is not None:
                raise ProtocolError(f"{self.violation} where '{kind.value}' was due")
            if self.failure:
                raise PeerError(f"{me} lost {where} while waiting for '{kind.value}': "
                                f"{self.failure}")
            raise PeerError(f"{me} waited {timeout_s:.0f} s for '{kind.value}' from {where}")
        got, payload = arrived
        expect_kind(self.peer, kind, got)
        return payload
