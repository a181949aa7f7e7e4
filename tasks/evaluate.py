"""Prefect task: evaluate every task on the test rows and publish the report."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.logging import get_run_logger

from splitrec_core.config import Config
from splitrec_core.evaluate import evaluate
from splitrec_core.features import PartyFeatures
from splitrec_core.psi import Alignment
from splitrec_core.report import Report
from splitrec_core.results import TrainResult
from splitrec_core.workspace import Workspace
from tasks._common import BACKOFF, JITTER, RETRIES, retry_unless_bad_input
from tasks._policies import content_policy


@task(name="evaluate", task_run_name="evaluate",
      retries=RETRIES, retry_delay_seconds=BACKOFF, retry_jitter_factor=JITTER,
      retry_condition_fn=retry_unless_bad_input,
      cache_policy=content_policy(), persist_result=True)
def evaluate_run(cfg: Config, label_features: PartyFeatures, alignment: Alignment,
                 training: TrainResult, label_only: TrainResult, workdir: Path,
                 central: TrainResult | None = None) -> Report:
    """Write `report/metrics.json` and return the report (`publish_report` shows it in the UI).

    The report itself, not its file, is the cached result: the registry's verdict is added to
    the file later in the run, and a result naming a file rewritten since is not reused.
    """
    names, label_test = cfg.task_names, label_features.test
    report = Report.of(
        evaluate(training.predictions, label_test, names), alignment, training,
        evaluate(label_only.predictions, label_test, names),
        evaluate(central.predictions, label_test, names) if central else None,
        label_has_features=bool(cfg.label.feature_columns), label_features=label_features)
    for note in report.notes:
        get_run_logger().warning(note)
    report.save(Workspace(workdir).report / "metrics.json")
    return report
