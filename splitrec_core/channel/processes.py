"""Parties in separate processes on one machine, over a pipe between every pair.

Each party has its own interpreter and TensorFlow runtime, so no party waits on another's Python.
Every pair of parties shares a duplex pipe (a socket pair: a message costs one write, and one read
by the thread that moves it into the receiver's inbox); a message is framed as `channel.framing`
says: the kind, a newline and the Arrow IPC bytes. Each party counts what it sends and what it
receives. What a party logs (its `splitrec_core` loggers: per-epoch lines, for one) comes back
to the parent's loggers of the same names, so it reaches the parent's terminal, its flow run's
log and its handlers.
"""

from __future__ import annotations

import contextvars
import logging
import logging.handlers
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from itertools import combinations
from multiprocessing.connection import Connection
from typing import TypeVar

import pyarrow as pa

from splitrec_core.channel.contract import Channel, Kind, Limits, PeerError, ProtocolError
from splitrec_core.channel.counting import CountingChannel
from splitrec_core.channel.framing import KIND_HEAD, frame, payload_size, received_table
from splitrec_core.channel.inbox import Incoming
from splitrec_core.channel.local import POLL_S, RECV_TIMEOUT_S

_LOST_PEER = ("PeerError", "ChannelAborted", "EOFError", "BrokenPipeError", "ConnectionResetError")
_FROM_A_PEER = {error.__name__: error for error in (ProtocolError, PeerError)}  # raised here alike

T = TypeVar("T")


class ProcessChannel(CountingChannel):
    """Party `me`'s endpoint: one pipe to each other party; counts what it sends and receives.

    A thread per pipe reads what the peer sends into the peer's bounded inbox (`Incoming`), as
    Flight's links do: a sender waits only while that inbox is full. A pipe alone holds no more
    than its socket buffers, so two parties sending each other a large message at once (a
    feature party embedding ahead while the label party returns gradients) would both wait for
    ever.
    """

    def __init__(self, me: str, pipes: dict[str, Connection], limits: Limits = Limits()) -> None:
        super().__init__(me, limits)
        self._pipes = pipes
        self._incoming = {peer: Incoming(peer, limits, RECV_TIMEOUT_S) for peer in pipes}
        for peer, pipe in pipes.items():
            threading.Thread(target=_read_pipe, args=(pipe, self._incoming[peer]), daemon=True,
                             name=f"pipe-{me}-from-{peer}").start()

    def send(self, kind: Kind, to: str, table: pa.Table) -> None:
        """Send `table` to party `to`."""
        message = frame(kind, table)
        self._count_outgoing(kind, to, payload_size(message))
        self._pipes[to].send_bytes(message)

    def recv(self, kind: Kind, frm: str) -> pa.Table:
        """Receive the next message from `frm`, which must be of `kind`."""
        payload = self._incoming[frm].take(self.me, kind, RECV_TIMEOUT_S, frm)
        self._received.add(kind, payload.nbytes)
        return received_table(frm, kind, payload)

    def ready(self, frm: str) -> bool:
        """Whether a message from `frm` waits (or its stream ended)."""
        return self._incoming[frm].inbox.ready()

    def close(self) -> None:
        """Close the pipes to the other parties (the process ends next)."""
        for pipe in self._pipes.values():
            pipe.close()


def _read_pipe(pipe: Connection, incoming: Incoming) -> None:
    """Deliver each message arriving on `pipe` to `incoming` until the pipe or the stream ends.

    A message over the maximum size is not read (the pipe is then of no further use).
    """
    limit = incoming.limits.max_message_bytes
    try:
        while incoming.deliver(memoryview(pipe.recv_bytes(limit + KIND_HEAD))):
            pass
    except EOFError:
        incoming.fail("ended the session")
    except OSError as error:
        if "bad message length" not in str(error):
            incoming.fail(f"broke the pipe: {error}")
        else:
            incoming.fail(ProtocolError(f"{incoming.peer} sent a message over the maximum "
                                        f"message size of {limit >> 20} MB"))


def pipe_channels(names: list[str], limits: Limits = Limits(),
                  ) -> dict[str, Callable[[], ProcessChannel]]:
    """For each party, what opens its `ProcessChannel` in its process: a pipe to every other."""
    context = multiprocessing.get_context("spawn")
    pipes: dict[str, dict[str, Connection]] = {name: {} for name in names}
    for a, b in combinations(names, 2):
        pipes[a][b], pipes[b][a] = context.Pipe()
    return {name: partial(ProcessChannel, name, pipes[name], limits) for name in names}


def own_cores(order: list[str]) -> dict[str, frozenset[int]]:
    """Cores for a process per party as if each were on a host of its own.

    The first party (the label party, whose step is the critical path) gets half of this
    machine's cores, the others share the rest. Empty on a single core.
    """
    cores = sorted(os.sched_getaffinity(0))
    half = len(cores) // 2
    if not half:
        return {}
    return {p: frozenset(cores[:half] if i == 0 else cores[half:]) for i, p in enumerate(order)}


LOGGER = "splitrec_core"  # whose records a party process sends back to the parent


def _log_to_parent(records: multiprocessing.Queue, level: int) -> None:
    """In a party process: send the parent every record of `LOGGER` at `level` or above."""
    logger = logging.getLogger(LOGGER)
    logger.setLevel(level)
    logger.addHandler(logging.handlers.QueueHandler(records))
    logger.propagate = False


def _forward_logs(records: multiprocessing.Queue) -> threading.Thread:
    """In the parent: hand each record the party processes send to the logger of its name here.

    It does so until a None arrives, on a thread that runs in the caller's context (a flow
    run's, say).
    """

    def forward() -> None:
        while (record := records.get()) is not None:
            logging.getLogger(record.name).handle(record)

    thread = threading.Thread(target=contextvars.copy_context().run, args=(forward,),
                              name="splitrec-party-logs", daemon=True)
    thread.start()
    return thread


def _serve(name: str, job: Callable[[Channel], T], open_channel: Callable[[], Channel],
           results: multiprocessing.Queue, cores: frozenset[int] | None,
           logs: multiprocessing.Queue, log_level: int) -> None:
    """A party process: open its channel, run its job, report the outcome (or the error)."""
    reported = False
    _log_to_parent(logs, log_level)
    try:
        if cores:
            os.sched_setaffinity(0, cores)  # before TensorFlow and gRPC start their threads
        channel = open_channel()
        try:
            outcome = job(channel)
        except BaseException as error:  # reported before the channel closes and the others
            results.put((name, False, f"{type(error).__name__}: {error}"))  # lose us
            reported = True
            raise
        finally:
            channel.close()
    except BaseException as error:  # reported, then the process exits non-zero
        if not reported:
            results.put((name, False, f"{type(error).__name__}: {error}"))
        raise
    results.put((name, True, outcome))


def _root_cause(first: tuple[str, str], results: multiprocessing.Queue) -> tuple[str, str]:
    """Of the failures reported within `POLL_S` of the `first`, one that did not merely lose a peer.

    Returns its (party, error): a party's crash makes its peers fail too, and their reports can
    come first.
    """
    failures, deadline = [first], time.monotonic() + POLL_S
    while time.monotonic() < deadline:
        try:
            name, ok, value = results.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if not ok:
            failures.append((name, value))
    return next((f for f in failures if not f[1].startswith(_LOST_PEER)), first)


def run_in_processes(jobs: Mapping[str, Callable[[Channel], T]],
                     channels: Mapping[str, Callable[[], Channel]] | None = None,
                     cores: Mapping[str, frozenset[int]] | None = None) -> dict[str, T]:
    """Run each party's job in its own (spawned) process; return their outcomes by party.

    `channels[party]` opens the party's channel in its process (default: `pipe_channels`);
    `cores[party]`, if given, are the cores it runs on (`own_cores`). Jobs and openers must be
    picklable. The first failure stops every party and is raised here: as the party's
    `PeerError` (or `ProtocolError`) if a peer failed it (the command line prints it in one
    line), else as a `RuntimeError`.
    """
    context = multiprocessing.get_context("spawn")
    channels = channels or pipe_channels(list(jobs))
    cores = cores or {}
    results, logs = context.Queue(), context.Queue()
    level = logging.getLogger(LOGGER).getEffectiveLevel()
    processes = {name: context.Process(target=_serve,
                                       args=(name, job, channels[name], results, cores.get(name),
                                             logs, level),
                                       name=f"splitrec-{name}", daemon=True)
                 for name, job in jobs.items()}
    forwarder = _forward_logs(logs)
    for process in processes.values():
        process.start()
    outcomes: dict[str, T] = {}
    try:
        while len(outcomes) < len(jobs):
            try:
                name, ok, value = results.get(timeout=POLL_S)
            except queue.Empty:
                dead = [n for n, p in processes.items()
                        if n not in outcomes and p.exitcode is not None]
                if dead:
                    raise RuntimeError(f"party {dead[0]} stopped (exit status "
                                       f"{processes[dead[0]].exitcode}) before finishing") from None
                continue
            if not ok:
                name, value = _root_cause((name, value), results)
                error = next((e for n, e in _FROM_A_PEER.items() if value.startswith(f"{n}:")),
                             RuntimeError)
                raise error(f"party {name} failed: {value}")
            outcomes[name] = value
    finally:
        for process in processes.values():
            if process.is_alive() and len(outcomes) < len(jobs):
                process.terminate()
            process.join()
        logs.put(None)  # after every record the parties sent (a party killed mid-record may
        forwarder.join(timeout=5)  # leave the queue broken: then its last records are lost)
    return outcomes
