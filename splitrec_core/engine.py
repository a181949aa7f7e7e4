"""Where a party's heavy steps run: on this process's threads (`local`, the default), or on a Dask
cluster of the party's own (`dask`): an existing one at a `tcp://` address, or a `LocalCluster`
of `workers` processes started for the step and stopped after it.

Only the party's own work goes to its cluster (its IDs, its points, its scalar); nothing of it
goes to another party, so what crosses between parties is the same byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from splitrec_core.config import EngineConfig


@contextmanager
def party_executor(engine: EngineConfig) -> Iterator[Executor | None]:
    """The executor a step of the party maps its blocks of work over while the block runs; None
    for the local engine (the step uses its own thread pool)."""
    if engine.kind == "local":
        yield None
        return
    from distributed import Client, LocalCluster

    if engine.address != "local":
        with Client(engine.address) as client:
            yield client.get_executor()
        return
    with LocalCluster(n_workers=engine.workers, threads_per_worker=1, processes=True,
                      memory_limit=engine.memory_limit, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client.get_executor()
