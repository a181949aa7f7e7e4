"""Prefect tasks: the run report for people, as `report.md` and as artifacts on the run's page.

`report.md` goes beside `metrics.json`; the artifacts on the flow run's page are tables, and the
Markdown report with its plots, which are drawn once per trained model (a cached task).
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from splitrec_core.config import Config
from splitrec_core.io import write_bytes
from splitrec_core.report import Report, markdown_report, run_plots, task_rows, traffic_rows
from splitrec_core.results import TrainResult
from tasks._common import BACKOFF, JITTER, RETRIES, retry_unless_bad_input
from tasks._policies import content_policy


def artifact_key(cfg: Config, what: str) -> str:
    """A key Prefect accepts (lowercase letters, digits, dashes), one per config and content."""
    return f"{cfg.name}-{what}".lower().replace("_", "-")


@task(name="draw_plots", task_run_name="draw_plots",
      retries=RETRIES, retry_delay_seconds=BACKOFF, retry_jitter_factor=JITTER,
      retry_condition_fn=retry_unless_bad_input,
      cache_policy=content_policy(("tasks",)), persist_result=True)
def draw_plots(cfg: Config, training: TrainResult) -> list[str]:
    """The report's plots of `training` (Markdown images): drawn again only for a new model."""
    return run_plots(training.history, training.predictions, cfg.task_names)


@task(name="publish_report", task_run_name="publish_report",
      retries=RETRIES, retry_delay_seconds=BACKOFF, retry_jitter_factor=JITTER,
      retry_condition_fn=retry_unless_bad_input,
      cache_policy=NO_CACHE, persist_result=False)
def publish_report(cfg: Config, report: Path, plots: list[str]) -> Path:
    """Write `report.md` beside `report` and show its tables and plots on the flow run's page.

    `report` is metrics.json, with the registry's verdict; `plots` are `draw_plots`'.
    """
    metrics = Report.load(report)
    markdown = markdown_report(cfg.name, metrics, plots)
    written = write_bytes(markdown.encode(), report.with_name("report.md"))
    create_table_artifact(task_rows(metrics), key=artifact_key(cfg, "metrics"),
                          description=f"Per task: test AUC and log loss, the label party alone, "
                                      f"the lift and the leakage audit ({cfg.name})")
    create_table_artifact(traffic_rows(metrics), key=artifact_key(cfg, "traffic"),
                          description="What crossed between parties, per message kind")
    create_markdown_artifact(markdown, key=artifact_key(cfg, "report"),
                             description=f"Run report of {cfg.name}: {json.dumps(str(report))}")
    return written
