"""Prefect task: evaluate every task on the test rows and publish the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact

from splitrec_core.channel import ChannelStats
from splitrec_core.config import parse_config
from splitrec_core.evaluate import build_report, evaluate
from splitrec_core.io import write_json
from splitrec_core.workspace import Workspace
from tasks._common import task_options


@task(name="evaluate", task_run_name="evaluate", **task_options())
def evaluate_run(cfg: dict, label_test: Path, alignment: dict[str, Any], training: dict[str, Any],
                 label_only: dict[str, Any], workdir: Path,
                 central: dict[str, Any] | None = None) -> Path:
    """Write `report/metrics.json` and a metrics table artifact for the Prefect UI."""
    config = parse_config(cfg)
    names = [t.name for t in config.tasks]
    metrics = evaluate(training["predictions"], label_test, names)
    alone = evaluate(label_only["predictions"], label_test, names)
    central_metrics = evaluate(central["predictions"], label_test, names) if central else None
    report = build_report(
        metrics, alignment["intersection"], alignment["train_rows"], alignment["test_rows"],
        ChannelStats.merge(alignment["channel"], training["channel"]), training["training"],
        training["leakage"], alone, central_metrics,
    )
    path = write_json(report, Workspace(workdir).report / "metrics.json")
    rows = [{"task": t, "test AUC": round(m["auc"], 4), "test logloss": round(m["logloss"], 4),
             "label party alone AUC": round(alone[t]["auc"], 4),
             **({"central AUC": round(central_metrics[t]["auc"], 4)} if central_metrics else {}),
             "gradient norm attack AUC": training["leakage"][t]["norm_auc"],
             "gradient cosine attack AUC": training["leakage"][t]["cosine_auc"]}
            for t, m in metrics.items()]
    create_table_artifact(rows, key=f"{config.name}-metrics".lower().replace("_", "-"),
                          description=f"Test metrics of the split MMoE on {config.name}")
    return path
