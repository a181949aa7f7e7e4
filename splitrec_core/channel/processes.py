"""Parties in separate processes on one machine: each has its own interpreter and TensorFlow
runtime, so no party waits on another's Python. Every pair of parties shares a duplex pipe (a
socket pair: no feeder thread, so a message costs one write and one read); a message is the kind,
a newline and the Arrow IPC bytes. Each party counts what it sends.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from itertools import combinations
from multiprocessing.connection import Connection
from typing import TypeVar

import pyarrow as pa

from splitrec_core.channel.base import Channel, ChannelStats, Kind, message_bytes
from splitrec_core.channel.local import POLL_S, RECV_TIMEOUT_S

T = TypeVar("T")


class ProcessChannel:
    """Party `me`'s endpoint: one pipe to each other party."""

    def __init__(self, me: str, pipes: dict[str, Connection]) -> None:
        self.me = me
        self._pipes = pipes
        self._stats = ChannelStats()
        self._held: dict[tuple[str, str], deque[memoryview]] = defaultdict(deque)  # arrived early

    def send(self, kind: Kind, to: str, table: pa.Table) -> None:
        """Send `table` to party `to`."""
        payload = message_bytes(kind, table)
        self._stats.add(kind, payload.size)
        self._pipes[to].send_bytes(kind.value.encode() + b"\n" + payload.to_pybytes())

    def recv(self, kind: Kind, frm: str) -> pa.Table:
        """Receive the next `kind` message from `frm`, holding back others that arrive first."""
        pipe, wanted = self._pipes[frm], (kind.value, frm)
        while not self._held[wanted]:
            if not pipe.poll(RECV_TIMEOUT_S):
                raise TimeoutError(f"{self.me} waited {RECV_TIMEOUT_S:.0f}s for '{kind.value}' "
                                   f"from {frm}")
            message = memoryview(pipe.recv_bytes())
            header = bytes(message[:32]).index(b"\n")
            self._held[(bytes(message[:header]).decode(), frm)].append(message[header + 1 :])
        return pa.ipc.open_stream(pa.py_buffer(self._held[wanted].popleft())).read_all()

    def stats(self) -> ChannelStats:
        """What this party sent."""
        return self._stats


def pipe_channels(names: list[str]) -> dict[str, Callable[[], ProcessChannel]]:
    """For each party, what opens its `ProcessChannel` in its process: a pipe to every other."""
    context = multiprocessing.get_context("spawn")
    pipes: dict[str, dict[str, Connection]] = {name: {} for name in names}
    for a, b in combinations(names, 2):
        pipes[a][b], pipes[b][a] = context.Pipe()
    return {name: partial(ProcessChannel, name, pipes[name]) for name in names}


@dataclass(frozen=True)
class Placement:
    """The cores a party process runs on: its network threads (the channel's: gRPC's, for
    Flight) on `network`, its training thread and TensorFlow's on `compute`."""

    network: frozenset[int]
    compute: frozenset[int]


def own_cores(order: list[str]) -> dict[str, Placement]:
    """Cores for a process per party as if each were on a host of its own. The first party (the
    label party), whose step is the critical path, computes on half of this machine's cores;
    everything else (the other parties, and its own network threads) shares the other half.
    Empty on a single core."""
    cores = sorted(os.sched_getaffinity(0))
    half = len(cores) // 2
    if not half:
        return {}
    own, shared = frozenset(cores[:half]), frozenset(cores[half:])
    return {p: Placement(shared, own if i == 0 else shared) for i, p in enumerate(order)}


def _serve(name: str, job: Callable[[Channel], T], open_channel: Callable[[], Channel],
           results: multiprocessing.Queue, placement: Placement | None) -> None:
    """A party process: open its channel, run its job, report the outcome (or the error)."""
    try:
        if placement:  # threads inherit the cores of the thread that starts them
            os.sched_setaffinity(0, placement.network)
        channel = open_channel()
        if placement:  # this thread, and TensorFlow's threads, which start with the job
            os.sched_setaffinity(0, placement.compute)
        try:
            outcome = job(channel)
        finally:
            if hasattr(channel, "close"):
                channel.close()
    except BaseException as error:  # reported, then the process exits non-zero
        results.put((name, False, f"{type(error).__name__}: {error}"))
        raise
    results.put((name, True, outcome))


def run_in_processes(jobs: dict[str, Callable[[Channel], T]],
                     channels: dict[str, Callable[[], Channel]] | None = None,
                     cores: dict[str, Placement] | None = None) -> dict[str, T]:
    """Run each party's job in its own (spawned) process; return their outcomes by party.

    `channels[party]` opens the party's channel in its process (default: `pipe_channels`);
    `cores[party]`, if given, places it on cores (`own_cores`). Jobs and openers must be
    picklable. The first failure stops every party and is raised here.
    """
    context = multiprocessing.get_context("spawn")
    channels = channels or pipe_channels(list(jobs))
    cores = cores or {}
    results = context.Queue()
    processes = {name: context.Process(target=_serve,
                                       args=(name, job, channels[name], results, cores.get(name)),
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
