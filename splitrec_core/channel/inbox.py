"""What one peer has sent and this party has not taken yet: in the order sent, and bounded.

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

    def close(self) -> None:
        """No more messages will come: wake whoever waits (what waits can still be taken)."""
        with self._changed:
            self.closed = True
            self._changed.notify_all()
