"""Prefect tasks: register a trained version at every party, then promote it if it is no worse."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from splitrec_core.config import Config
from splitrec_core.registry import SharedModel, promote_if_no_worse, register_run
from splitrec_core.registry.promotion import Verdict
from splitrec_core.report import Report, verdict_line
from splitrec_core.results import TrainResult
from splitrec_core.workspace import Workspace
from tasks._common import BACKOFF, JITTER, RETRIES, retry_unless_bad_input


@task(name="register", task_run_name="register",
      retries=RETRIES, retry_delay_seconds=BACKOFF, retry_jitter_factor=JITTER,
      retry_condition_fn=retry_unless_bad_input,
      cache_policy=NO_CACHE, persist_result=False)
def register_version(cfg: Config, training: TrainResult, exports: dict[str, Path], report: Report,
                     workdir: Path) -> str:
    """Register every party's export as one version; return its ID (`register_run`)."""
    return register_run(cfg, training.predictions, exports, report.version_metrics, workdir)


@task(name="promote", task_run_name="promote",
      retries=RETRIES, retry_delay_seconds=BACKOFF, retry_jitter_factor=JITTER,
      retry_condition_fn=retry_unless_bad_input,
      cache_policy=NO_CACHE, persist_result=False)
def promote_if_better(cfg: Config, version: str, report: Report, workdir: Path) -> Path:
    """Make `version` the champion at every party if the promotion rule allows it.

    Returns `report/metrics.json`, with the verdict and its reasons added.
    """
    verdict = promote_if_no_worse(SharedModel.of(cfg, workdir), version, cfg.registry)
    get_run_logger().info(verdict_line(verdict))
    return record_verdict(report, verdict, workdir)


def record_verdict(report: Report, verdict: Verdict, workdir: Path) -> Path:
    """Write the run's `metrics.json` (the report people read) with the registry's verdict."""
    return report.with_verdict(verdict).save(Workspace(workdir).report / "metrics.json")
