"""Where a party's heavy steps run: on this process's threads, or on a Dask cluster of its own.

The `local` engine (the default) runs them on this process's threads. The `dask` engine runs them
on the party's own cluster: an existing one at a `tcp://` address, the one its flow run's task
runner started (`on_cluster`), or else a `LocalCluster` of `workers` processes started for the
step and stopped after it.

Only the party's own work goes to its cluster (its IDs, its points, its scalar); nothing of it
goes to another party, so what crosses between parties is the same byte for byte.
"""

from __future__ import annotations

import ctypes
import gc
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import TypeVar

import pyarrow as pa

from splitrec_core.config import EngineConfig

LOCAL = EngineConfig()  # this process's threads
Item = TypeVar("Item")
Result = TypeVar("Result")
IN_FLIGHT = 4  # pieces of work a party's cluster holds at once (so memory is bounded by piece size)
_RUN_CLUSTER: ContextVar[str | None] = ContextVar("run_cluster", default=None)


@contextmanager
def on_cluster(address: str) -> Iterator[None]:
    """Within the block, let a step on a Dask engine at address "local" use another cluster.

    The step uses the cluster at `address` (the one the party's flow run started once) instead of
    starting its own.
    """
    token = _RUN_CLUSTER.set(address)
    try:
        yield
    finally:
        _RUN_CLUSTER.reset(token)


@contextmanager
def party_executor(engine: EngineConfig) -> Iterator[Executor | None]:
    """The executor a step of the party maps its blocks of work over while the block runs.

    None for the local engine (the step uses its own thread pool). After the step, this process
    and the workers of a cluster that outlives it hand the memory the step freed back to the OS.
    """
    try:
        if engine.kind == "local":
            yield None
            return
        from distributed import Client, LocalCluster

        address = engine.address if engine.address != "local" else _RUN_CLUSTER.get()
        if address:
            with Client(address) as client:
                yield client.get_executor()
                # A worker lost during the step has nothing to hand back: skip it, do not fail
                client.run(_release_memory, collect_cycles=True, on_error="ignore")
            return
        with LocalCluster(n_workers=engine.workers, threads_per_worker=1, processes=True,
                          memory_limit=engine.memory_limit, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            yield client.get_executor()
    finally:
        _release_memory()


def _release_memory(collect_cycles: bool = False) -> None:
    """Hand the memory a step freed back to the OS (Arrow's pool and glibc keep it otherwise).

    That keeps one step's peak from being carried into the next on a cluster the run's steps
    share (the scale benchmark's 10M run: benchmarks/RESULTS.md).

    Only a cluster's worker also collects reference cycles first: its heap is small, while in a
    party's own process, with TensorFlow and Prefect loaded, `gc.collect()` walks every object
    they made, a pause each step that small runs (and the test suite) feel most.
    """
    if collect_cycles:
        gc.collect()
    pa.default_memory_pool().release_unused()
    with suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def in_order(executor: Executor | None, work: Callable[[Item], Result],
             items: Iterable[Item]) -> Iterator[tuple[Item, Result]]:
    """`(item, work(item))` for every item, in the items' order.

    The work runs in this process with no `executor`, else on it with at most `IN_FLIGHT` items
    handed out and not yet taken back.
    """
    if executor is None:
        yield from ((item, work(item)) for item in items)
        return
    pending: deque[tuple[Item, Future[Result]]] = deque()
    for item in items:
        pending.append((item, executor.submit(work, item)))
        if len(pending) > IN_FLIGHT:
            item, future = pending.popleft()
            yield item, future.result()
    for item, future in pending:
        yield item, future.result()
