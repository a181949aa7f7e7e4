"""Parties in separate processes on one machine: each has its own interpreter and TensorFlow
runtime, so no party waits on another's Python. Messages are Arrow IPC bytes put in the
recipient's inbox (a multiprocessing queue); each party counts what it sends.
"""

from __future__ import annotations

import multiprocessing
import queue
from collections import defaultdict, deque
from collections.abc import Callable
from typing import TypeVar

import pyarrow as pa

from splitrec_core.channel.base import ChannelStats, Kind, ipc_bytes
from splitrec_core.channel.local import POLL_S, RECV_TIMEOUT_S

T = TypeVar("T")


class ProcessChannel:
    """Party `me`'s endpoint: it sends into other parties' inboxes and reads its own."""

    def __init__(self, me: str, inboxes: dict[str, multiprocessing.Queue]) -> None:
        self.me = me
        self._inboxes = inboxes
        self._stats = ChannelStats()
        self._held: dict[tuple[str, str], deque[bytes]] = defaultdict(deque)  # arrived early

    def send(self, kind: Kind, to: str, table: pa.Table) -> None:
        """Send `table` to party `to`."""
        if not isinstance(kind, Kind):
            raise ValueError(f"unknown message kind {kind!r}")
        payload = ipc_bytes(table).to_pybytes()
        self._stats.add(kind, len(payload))
        self._inboxes[to].put((kind.value, self.me, payload))

    def recv(self, kind: Kind, frm: str) -> pa.Table:
        """Receive the next `kind` message from `frm`, holding back others that arrive first."""
        wanted = (kind.value, frm)
        while not self._held[wanted]:
            try:
                got_kind, sender, payload = self._inboxes[self.me].get(timeout=RECV_TIMEOUT_S)
            except queue.Empty:
                raise TimeoutError(f"{self.me} waited {RECV_TIMEOUT_S:.0f}s for '{kind.value}' "
                                   f"from {frm}") from None
            self._held[(got_kind, sender)].append(payload)
        return pa.ipc.open_stream(self._held[wanted].popleft()).read_all()

    def stats(self) -> ChannelStats:
        """What this party sent."""
        return self._stats


def _serve(name: str, job: Callable[[ProcessChannel], T], inboxes: dict[str, multiprocessing.Queue],
           results: multiprocessing.Queue) -> None:
    """A party process: run its job, report the outcome (or the error) to the parent."""
    try:
        outcome = job(ProcessChannel(name, inboxes))
    except BaseException as error:  # reported, then the process exits non-zero
        results.put((name, False, f"{type(error).__name__}: {error}"))
        raise
    results.put((name, True, outcome))


def run_in_processes(jobs: dict[str, Callable[[ProcessChannel], T]]) -> dict[str, T]:
    """Run each party's job in its own (spawned) process; return their outcomes by party.

    The jobs must be picklable. The first failure stops every party and is raised here.
    """
    context = multiprocessing.get_context("spawn")
    inboxes = {name: context.Queue() for name in jobs}
    results = context.Queue()
    processes = {name: context.Process(target=_serve, args=(name, job, inboxes, results),
                                       name=f"splitrec-{name}", daemon=True)
                 for name, job in jobs.items()}
    for process in processes.values():
        process.start()
    outcomes: dict[str, T] = {}
    try:
        while len(outcomes) < len(jobs):
            try:
                name, ok, value = results.get(timeout=POLL_S)
            except queue.Empty:
                dead = [n for n, p in processes.items() if n not in outcomes and p.exitcode is not None]
                if dead:
                    raise RuntimeError(f"party {dead[0]} stopped (exit status "
                                       f"{processes[dead[0]].exitcode}) before finishing") from None
                continue
            if not ok:
                raise RuntimeError(f"party {name} failed: {value}")
            outcomes[name] = value
    finally:
        for process in processes.values():
            if process.is_alive() and len(outcomes) < len(jobs):
                process.terminate()
            process.join()
    return outcomes
