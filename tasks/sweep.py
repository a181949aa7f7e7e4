"""Prefect tasks for `splitrec sweep`: score one grid point, write the comparison table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact

from splitrec_core.config import Config
from splitrec_core.evaluate import evaluate
from splitrec_core.io import atomic_path, write_json
from splitrec_core.report import sweep_table
from splitrec_core.workspace import Workspace
from tasks._common import BACKOFF, JITTER, RETRIES, retry_unless_bad_input
from tasks._policies import content_policy
from tasks.report import artifact_key


@task(name="evaluate_variant",
      retries=RETRIES, retry_delay_seconds=BACKOFF, retry_jitter_factor=JITTER,
      retry_condition_fn=retry_unless_bad_input,
      cache_policy=content_policy(), persist_result=True)
def evaluate_variant(cfg: Config, predictions: Path, label_test: Path) -> dict[str, float | None]:
    """Test AUC per task of one grid point's predictions."""
    tasks = cfg.task_names
    return {t: m["auc"] for t, m in evaluate(predictions, label_test, tasks).items()}


@task(name="write_sweep", task_run_name="write_sweep",
      retries=RETRIES, retry_delay_seconds=BACKOFF, retry_jitter_factor=JITTER,
      retry_condition_fn=retry_unless_bad_input,
      cache_policy=content_policy(), persist_result=True)
def write_sweep(cfg: Config, rows: list[dict[str, Any]], workdir: Path) -> Path:
    """Write `report/sweep.json` and `report/sweep.md`, and publish the table to the UI."""
    table = sweep_table(rows, cfg.task_names)
    report = Workspace(workdir).report
    write_json(rows, report / "sweep.json")
    with atomic_path(report / "sweep.md") as tmp:
        tmp.write_text(table, encoding="utf-8")
    create_markdown_artifact(table, key=artifact_key(cfg, "sweep"),
                             description=f"Split MMoE sweep on {cfg.name}")
    return report / "sweep.md"
