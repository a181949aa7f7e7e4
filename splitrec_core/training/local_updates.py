"""Local updates: training steps on recently exchanged batches while a peer's message is in flight.

Over a long link a party spends most of a batch waiting: for the gradients of the embeddings it
sent, or for the next embeddings. CELU-VFL (Fu et al., PVLDB 15(10), 2022) fills that time:
each party keeps a workset of the last `size` batches it exchanged (a feature party its inputs,
the embeddings it sent and the gradients that came back; the label party its own columns, the
labels, the embeddings it received and the gradients it computed for them) and, while it waits,
steps on a batch drawn from it uniformly, each batch at most `reuse` times. A cached row counts
as far as its cached value still agrees with today's (`steps.common.agreement`).

Nothing crosses for a local step: it adds compute, never traffic. Each is a step of the
party's optimizer like a fresh one, so the learning-rate schedule counts it (as CELU-VFL's
`global_step` does). A party steps locally only while it waits on a link, not on a peer's
work: only when its recent waits (the median of the last `RECENT` that did not find the
message there) last `LINK_WAIT_S` or more, and only while a whole step fits in what that leaves
of the wait (a step under way when the message arrives is finished first). Shorter waits are
the peers' own steps, and on one host the peers share its cores: local steps there slowed
census epochs and cost it AUC (benchmarks/RESULTS.md). A full window, not a running mean, so
that a run's first waits (its peers starting) or one long wait (a peer's validation) start
none. Over loopback or a LAN it so takes none, and trains exactly as without.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

    from splitrec_core.training.wire import BatchesIn

T = TypeVar("T")
SMOOTHING = 0.2  # the weight of the latest step in the running estimate of a step's time
LINK_WAIT_S = 0.04  # waits shorter than this are a peer's compute, not a long link's round trip
RECENT = 9  # waits the estimate of the next is the median of


@dataclass(frozen=True)
class LocalSettings:
    """How many batches a workset keeps, and how often each may be stepped on again."""

    size: int = 5   # W: the last batches exchanged
    reuse: int = 5  # R: local steps per cached batch at most


@dataclass
class _Cached:
    arrays: tuple
    uses: int = 0


class Workset:
    """The last `size` exchanged batches, each handed out at most `reuse` times.

    Batches are drawn uniformly from those kept (`draw`); the oldest makes room for a new one,
    and a batch drawn `reuse` times is dropped. The draws come from `seed`: which batches a run
    steps on locally depends only on when messages arrive.
    """

    def __init__(self, settings: LocalSettings, seed: int) -> None:
        self.reuse = settings.reuse
        self.kept: deque[_Cached] = deque(maxlen=settings.size)
        self._rng = np.random.default_rng(seed)

    def add(self, *arrays: object) -> None:
        """Keep a batch just exchanged (dropping the oldest if the workset is full)."""
        self.kept.append(_Cached(arrays))

    def draw(self) -> tuple | None:
        """A kept batch's arrays, drawn uniformly (None if none is left to step on)."""
        if not self.kept:
            return None
        index = int(self._rng.integers(len(self.kept)))
        drawn = self.kept[index]
        drawn.uses += 1
        if drawn.uses >= self.reuse:
            del self.kept[index]
        return drawn.arrays


@dataclass
class LocalUpdates:
    """A party's workset and its local step; `taken` counts the steps it took (`counted`).

    `waits` are the latest waits for a message (those that did not find it there already),
    `step_s` a running estimate of a local step's time.
    """

    workset: Workset
    step: Callable[..., object]
    taken: int = 0
    waits: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))
    step_s: float = 0.0

    @property
    def wait_s(self) -> float:
        """What the next wait is expected to last: 0 until `RECENT` waits were seen.

        The first waits of a run are a peer's start, not the link's.
        """
        return float(np.median(self.waits)) if len(self.waits) >= RECENT else 0.0

    @classmethod
    def of(cls, settings: LocalSettings | None, seed: int,
           step: Callable[..., object]) -> LocalUpdates | None:
        """A party's local updates with `settings` and its local `step`; None without settings."""
        return None if settings is None else cls(Workset(settings, seed), step)

    def counted(self) -> int:
        """The local steps taken since the last call (an epoch's), counting afresh from 0."""
        taken, self.taken = self.taken, 0
        return taken

    def meanwhile(self, ready: Callable[[], bool], take: Callable[[], T]) -> T:
        """`take()` a message, stepping locally first while it is not `ready()`.

        A step is taken while one fits in what the estimate leaves of the wait, and a batch is
        left to draw.
        """
        if ready():
            return take()
        started, expected_s = time.perf_counter(), self.wait_s
        while not ready() and self._fits(expected_s, time.perf_counter() - started):
            arrays = self.workset.draw()
            if arrays is None:
                break
            stepped = time.perf_counter()
            self.step(*arrays)
            self.taken += 1
            self.step_s += SMOOTHING * (time.perf_counter() - stepped - self.step_s)
        taken = take()
        self.waits.append(time.perf_counter() - started)
        return taken

    def _fits(self, expected_s: float, waited_s: float) -> bool:
        """Whether a step fits in a wait `expected_s` long that has lasted `waited_s`.

        Only in a link's wait (`LINK_WAIT_S`); until a step has been timed, one is tried
        whenever the wait is expected to go on.
        """
        return expected_s >= LINK_WAIT_S and expected_s - waited_s > self.step_s


def take_stepping(inbox: BatchesIn, rows: int, local: LocalUpdates | None) -> tf.Tensor:
    """The next `rows` rows from `inbox`; with `local` updates, stepping while they are awaited."""
    if local is None:
        return inbox.take(rows)
    return local.meanwhile(inbox.ready, lambda: inbox.take(rows))
