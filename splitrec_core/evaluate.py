"""Held-out metrics per task, each from that task's own labels on the test rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from sklearn.metrics import log_loss, roc_auc_score

from splitrec_core.features import FeatureMatrix


def task_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """AUC and log loss of one task; AUC is undefined (NaN) when the labels have one class."""
    auc = roc_auc_score(labels, probabilities) if len(np.unique(labels)) == 2 else float("nan")
    return {
        "auc": float(auc),
        "logloss": float(log_loss(labels, np.clip(probabilities, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "positives": int(labels.sum()),
        "rows": int(len(labels)),
    }


def evaluate(predictions: Path, label_test: Path, tasks: list[str]) -> dict[str, dict[str, float]]:
    """Score `predictions` (from training or scoring) against the label party's test labels.

    Both files are in common-position order; positions are checked to match row for row.
    """
    predicted = pq.read_table(predictions)
    truth = FeatureMatrix.read(label_test)
    if not np.array_equal(predicted.column("position").to_numpy(), FeatureMatrix.positions(label_test)):
        raise ValueError(f"{predictions}: rows do not line up with the test labels in {label_test}")
    return {t: task_metrics(truth.labels[t], predicted.column(f"p:{t}").to_numpy()) for t in tasks}


def build_report(
    tasks: dict[str, dict[str, float]], intersection: int, train_rows: int, test_rows: int,
    channel: dict[str, dict[str, int]], training: dict[str, float], leakage: dict[str, dict[str, float]],
    label_only: dict[str, dict[str, float]], central: dict[str, dict[str, float]] | None = None,
) -> dict[str, object]:
    """The run's `metrics.json`: per-task test metrics, sizes, traffic per message kind, training
    speed and epochs (run, and kept by early stopping), the leakage audit of the gradients the
    label party sent, and the federation lift: test AUC of the split model, of the label party
    alone and (if trained) of all columns pooled."""
    report: dict[str, object] = {
        "tasks": tasks,
        "psi": {"intersection": intersection},
        "rows": {"train": train_rows, "test": test_rows},
        "channel": channel,
        "training": training,
        "leakage": leakage,
        "lift": {t: {"split": tasks[t]["auc"], "label_only": label_only[t]["auc"],
                     "central": central[t]["auc"] if central else None,
                     "lift": tasks[t]["auc"] - label_only[t]["auc"]} for t in tasks},
    }
    if central is not None:
        report["central"] = central
    return report


def sweep_table(rows: list[dict[str, object]], tasks: list[str]) -> str:
    """A Markdown table of sweep results: one row per grid point, test AUC per task."""
    head = "| experts | expert units | task weights | " + " | ".join(f"{t} AUC" for t in tasks) + " |"
    lines = [head, "|" + "---|" * (3 + len(tasks))]
    for row in rows:
        aucs = " | ".join(f"{row['auc'][t]:.4f}" for t in tasks)  # type: ignore[index]
        lines.append(f"| {row['num_experts']} | {row['expert_units']} | {row['task_weights']} | {aucs} |")
    return "\n".join(lines) + "\n"
