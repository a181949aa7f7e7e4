"""The CPU seconds the processes of a training run spend, whichever process each party runs in.

Rows per second on one host depend on how many cores it has and on who else uses them: parties
in processes of their own share the cores with each other. The CPU seconds every process spends
on the same rows do not, so they compare split training with central training on any machine.
"""

from __future__ import annotations

import os
import socket
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass


def process_cpu_s() -> float:
    """User plus system CPU seconds this process has spent so far.

    It counts all its threads, ended ones too: TensorFlow's, gRPC's and Flight's as well as
    Python's.
    """
    return time.process_time()


def this_process() -> str:
    """This process, named so that no other process of the run shares the name (host and pid)."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class CpuSpan:
    """A process's CPU seconds at the start and at the end of one party's share of the work.

    Attributes:
        process: the process it ran in (`this_process`).
        start_s: its `process_cpu_s` when the span began.
        end_s: its `process_cpu_s` when the span ended.
    """

    process: str
    start_s: float
    end_s: float


def total_cpu_s(spans: Iterable[CpuSpan]) -> float:
    """The CPU seconds the processes of `spans` spent over them, each process counted once.

    Parties on threads of one process share its clock, which counts them all: their span runs
    from the latest start (when the last of them was ready) to the latest end, as the wall-clock
    span of training does. Parties in processes of their own each add their own span.
    """
    by_process: dict[str, list[CpuSpan]] = defaultdict(list)
    for span in spans:
        by_process[span.process].append(span)
    return sum(max(s.end_s for s in shared) - max(s.start_s for s in shared)
               for shared in by_process.values())
