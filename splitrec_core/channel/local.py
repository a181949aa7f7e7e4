"""All parties in one process: messages are Arrow IPC buffers passed through a queue per pair."""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TypeVar

import pyarrow as pa

from splitrec_core.channel.contract import ChannelStats, Kind, Limits, expect_kind
from splitrec_core.channel.counting import CountingChannel
from splitrec_core.channel.framing import payload_bytes, received_table

RECV_TIMEOUT_S = 600.0
POLL_S = 0.2
T = TypeVar("T")


class ChannelAborted(RuntimeError):
    """Another party failed, so no message will come."""


class LocalHub:
    """The in-process 'network' that `LocalChannel`s share; it counts and can record traffic.

    Messages are serialised to Arrow IPC on send and read back on receive, so parties never share
    memory and the byte counts are what a network transport would carry. Each pair of parties
    has a queue each way, taken in the order sent, as over a network stream. The queues are not
    bounded: what waits is memory of this process either way.
    """

    def __init__(self, record: bool = False, limits: Limits = Limits()) -> None:
        self._queues: dict[tuple[str, str], queue.Queue[tuple[Kind, pa.Buffer]]] = (
            defaultdict(queue.Queue))
        self._lock = threading.Lock()
        self._stats = ChannelStats()
        self.record, self.limits = record, limits
        self._aborted: str | None = None
        self.recorded: list[tuple[Kind, str, str, bytes]] = []

    def channel(self, me: str) -> LocalChannel:
        """Return party `me`'s endpoint."""
        return LocalChannel(self, me)

    def _route(self, frm: str, to: str) -> queue.Queue[tuple[Kind, pa.Buffer]]:
        with self._lock:
            return self._queues[(frm, to)]

    def post(self, kind: Kind, frm: str, to: str, payload: pa.Buffer) -> None:
        """Enqueue one serialised message, counting its bytes."""
        with self._lock:
            self._stats.add(kind, payload.size)
            if self.record:
                self.recorded.append((kind, frm, to, payload.to_pybytes()))
        self._route(frm, to).put((kind, payload))

    def count(self, kind: Kind, nbytes: int) -> None:
        """Count traffic that went beside the hub's queues (RR22 PSI over spu's own link)."""
        with self._lock:
            self._stats.add(kind, nbytes)

    def take(self, kind: Kind, frm: str, to: str, timeout: float = RECV_TIMEOUT_S) -> pa.Buffer:
        """Dequeue the next serialised message from `frm` to `to`, which must be of `kind`."""
        route, deadline = self._route(frm, to), time.monotonic() + timeout
        while True:
            if self._aborted:
                raise ChannelAborted(f"{to} stopped waiting for '{kind.value}': {self._aborted}")
            try:
                arrived, buffer = route.get(timeout=POLL_S)
                break
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{to} waited {timeout:.0f}s for '{kind.value}' from {frm}") from None
        expect_kind(frm, kind, arrived.value)
        return buffer

    def ready(self, frm: str, to: str) -> bool:
        """Whether `take` from `frm` to `to` would return (or fail) now."""
        return bool(self._aborted) or not self._route(frm, to).empty()

    def abort(self, reason: str) -> None:
        """Make every pending and future `take` raise, so no party waits for a failed one."""
        self._aborted = reason

    def run(self, jobs: Mapping[str, Callable[[], T]]) -> dict[str, T]:
        """Run each party's job on its own thread; on the first failure abort the rest, re-raise it.

        Each job sees a copy of the caller's context variables: an orchestrator's run context
        comes along, so the parties' log lines land in the caller's run log.
        """
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            futures = {name: pool.submit(contextvars.copy_context().run, job)
                       for name, job in jobs.items()}
            done, _ = wait(futures.values(), return_when=FIRST_EXCEPTION)
            failed = [exc for f in done if (exc := f.exception()) is not None]
            if failed:
                error = next((e for e in failed if not isinstance(e, ChannelAborted)), failed[0])
                self.abort(f"{type(error).__name__}: {error}")
                raise error
            return {name: future.result() for name, future in futures.items()}

    def stats(self) -> ChannelStats:
        """Traffic counted so far: every party's, on this shared hub."""
        return self._stats


class LocalChannel(CountingChannel):
    """Party `me`'s endpoint on a `LocalHub`; counts what this party sends and receives."""

    def __init__(self, hub: LocalHub, me: str) -> None:
        super().__init__(me, hub.limits)
        self.hub = hub

    def send(self, kind: Kind, to: str, table: pa.Table) -> None:
        """Send `table` to party `to`."""
        payload = payload_bytes(kind, table)
        self._count_outgoing(kind, to, payload.size)
        self.hub.post(kind, self.me, to, payload)

    def recv(self, kind: Kind, frm: str) -> pa.Table:
        """Receive the next message from `frm`, which must be of `kind`."""
        payload = self.hub.take(kind, frm, self.me)
        self._received.add(kind, payload.size)
        return received_table(frm, kind, payload)

    def ready(self, frm: str) -> bool:
        """Whether a message from `frm` waits (or the hub aborted)."""
        return self.hub.ready(frm, self.me)

    def count_beside(self, kind: Kind, sent: int, received: int) -> None:
        """Count traffic outside the hub here and in the hub's total (by what was sent)."""
        super().count_beside(kind, sent, received)
        if sent:
            self.hub.count(kind, sent)

    def close(self) -> None:
        """Nothing to let go of: the hub's queues belong to the hub."""
