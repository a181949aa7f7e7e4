"""What a failed flow run does last: a log line, and a message if the config names a block.

The log line names the step (and party) that failed; the message goes through the Prefect
notification block the config names, if it names one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.logging.loggers import flow_run_logger

from splitrec_core.config import load_config
from splitrec_core.errors import InputError
from splitrec_core.federation import PartyFiles


def failed_steps(flow_run_id: Any, parties: list[str], me: str | None = None) -> list[str]:
    """'step at party' (or 'step', for a step of all parties) for each failed or crashed task run.

    The task runs are those of the flow run; `me` is the party whose own flow it is, when the
    parties run apart.
    """
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    steps = []
    for run in sorted(runs, key=lambda r: r.start_time or r.expected_start_time):
        if run.state and (run.state.is_failed() or run.state.is_crashed()):
            step, _, party = run.name.rpartition("-")
            if party in parties:
                steps.append(f"step {step} at party {party}")
            else:
                steps.append(f"step {run.name}" + (f" at party {me}" if me else ""))
    return steps


def report_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """A flow's `on_failure` hook: log which step failed at which party and why.

    It also notifies the config's (or federation's) `notify.block`, if set.
    """
    logger = flow_run_logger(flow_run, flow)
    parameters = flow_run.parameters
    me = None
    try:
        if "config_path" in parameters:
            cfg = load_config(Path(parameters["config_path"]))
        else:  # a party's own flow, parties apart
            files = PartyFiles.model_validate(parameters["files"])
            cfg, me = files.load().config, files.party
    except (InputError, KeyError, ValueError):  # the config or the files parameter itself was
        # the problem (pydantic's ValidationError is a ValueError): nothing more to name
        logger.error("%s run %s failed: %s", flow.name, flow_run.name, state.message)
        return
    steps = failed_steps(flow_run.id, [p.name for p in cfg.parties], me) or ["the flow itself"]
    line = (f"{flow.name} run {flow_run.name} of {cfg.name} failed at {', '.join(steps)}: "
            f"{state.message}")
    logger.error(line)
    if cfg.notify.block:
        notify(cfg.notify.block, line, f"splitrec: {cfg.name} run failed", logger)


def notify(block: str, body: str, subject: str, logger: Any) -> None:
    """Send `body` through the notification `block`; if it cannot, say so in one log line.

    A missing block or an unreachable receiver must not bury the failure being reported under a
    traceback of its own.
    """
    try:
        notifier = Block.load(block)
    except ValueError as exc:
        kind, _, name = block.partition("/")
        logger.error("no message sent: notify.block '%s' cannot be loaded (%s). Make it in the "
                     "UI (Blocks → + → the %s block type, named '%s') or from Python, e.g. "
                     "SlackWebhook(url=...).save('%s')", block, exc, kind, name, name)
        return
    try:
        notifier.notify(body=body, subject=subject)
    except Exception as exc:  # noqa: BLE001 - whatever the receiver did, the run's failure stands
        logger.error("no message sent: notify.block '%s' failed: %s: %s", block,
                     type(exc).__name__, exc)
