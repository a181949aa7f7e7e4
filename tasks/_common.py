"""What every pipeline task shares: its retry rule, and the task runner of a party's flow.

Each task states its own policy in its `@task`: `RETRIES` retries after `BACKOFF` (with
`JITTER`), unless `retry_unless_bad_input` says a retry cannot help; a cache keyed by content
(`tasks._policies.content_policy`), or none for a task that changes or reads changing state
(the registry, the run's artifacts).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect.context import FlowRunContext
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff

from splitrec_core.channel import ProtocolError
from splitrec_core.config import EngineConfig
from splitrec_core.engine import on_cluster
from splitrec_core.errors import InputError

RETRIES = 2
BACKOFF = exponential_backoff(backoff_factor=2)  # 2 s, then 4 s
JITTER = 0.5


def retry_unless_bad_input(task: Any, task_run: Any, state: Any) -> bool:
    """Retry transient failures; bad input fails at once, since a retry cannot fix it.

    Neither can it fix a peer that broke the protocol (`ProtocolError`): it would again.
    """
    try:
        state.result()
    except (InputError, ProtocolError):
        return False
    except BaseException:  # noqa: BLE001 - any other failure may be transient
        return True
    return True


def party_task_runner(engine: EngineConfig) -> TaskRunner:
    """The task runner of a party's own flow: on a Dask engine a DaskTaskRunner, else threads.

    The DaskTaskRunner (prefect-dask's) runs on the party's cluster (at `address`, or a
    LocalCluster of `workers` for the flow run), which the run's steps then share
    (`on_run_cluster`).
    """
    if engine.kind == "local":
        return ThreadPoolTaskRunner()
    from prefect_dask import DaskTaskRunner

    if engine.address != "local":
        return DaskTaskRunner(address=engine.address)
    return DaskTaskRunner(cluster_kwargs={
        "n_workers": engine.workers, "threads_per_worker": 1, "processes": True,
        "memory_limit": engine.memory_limit, "dashboard_address": None})


@contextmanager
def on_run_cluster() -> Iterator[None]:
    """Within the block, let every Dask step of the party use the flow run's DaskTaskRunner.

    In a flow run on a DaskTaskRunner, the steps use the runner's cluster (started once for the
    run) instead of starting a LocalCluster per step.
    """
    from prefect_dask import DaskTaskRunner

    context = FlowRunContext.get()
    if context is None or not isinstance(context.task_runner, DaskTaskRunner):
        yield
        return
    with on_cluster(context.task_runner.client.scheduler.address):  # started on first use
        yield
