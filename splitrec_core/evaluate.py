"""Held-out metrics per task, each from that task's own labels on the test rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from splitrec_core.features import FeatureMatrix

TaskMetrics = dict[str, float | int | None]


def task_metrics(labels: np.ndarray, probabilities: np.ndarray,
                 people: np.ndarray | None = None) -> TaskMetrics:
    """AUC, log loss and calibration of one task; with `people` (each row's), GAUC too.

    AUC needs positive and negative rows: without both it is None (null in JSON, which has no
    NaN), and `undefined_auc` says why. Calibration is the mean predicted probability beside
    the observed rate of positives.
    """
    # here, not at the top: scikit-learn (with SciPy) loads slowly, and a run whose every step
    # is cached imports this module but never needs it
    from sklearn.metrics import log_loss, roc_auc_score

    positives = int(labels.sum())
    metrics: TaskMetrics = {
        "auc": (float(roc_auc_score(labels, probabilities)) if 0 < positives < len(labels)
                else None),
        "logloss": float(log_loss(labels, np.clip(probabilities, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "predicted_rate": float(np.mean(probabilities)),
        "observed_rate": positives / len(labels),
        "positives": positives,
        "rows": int(len(labels)),
    }
    if people is not None:
        metrics["gauc"] = grouped_auc(labels, probabilities, people)
    return metrics


def grouped_auc(labels: np.ndarray, probabilities: np.ndarray, people: np.ndarray,
                ) -> float | None:
    """GAUC: each person's AUC over its own rows, averaged weighted by the person's rows.

    Only people with both a positive and a negative row count (None if there are none). Each
    person's AUC comes from the ranks of its rows' probabilities (ties share their mean rank), so
    every person costs a few array operations, not a call.
    """
    frame = pd.DataFrame({"person": people, "p": probabilities, "y": labels.astype(np.int64)})
    ranks = frame.groupby("person")["p"].rank(method="average").to_numpy()
    _, person = np.unique(people, return_inverse=True)
    rows = np.bincount(person)
    pos = np.bincount(person, weights=frame["y"].to_numpy())
    neg = rows - pos
    rank_sum = np.bincount(person, weights=ranks * frame["y"].to_numpy())
    both = (pos > 0) & (neg > 0)
    if not both.any():
        return None
    aucs = (rank_sum[both] - pos[both] * (pos[both] + 1) / 2) / (pos[both] * neg[both])
    return float(np.average(aucs, weights=rows[both]))


def undefined_auc(metrics: dict[str, TaskMetrics]) -> list[str]:
    """One sentence per task whose AUC is undefined, saying why."""
    notes = []
    for task, m in metrics.items():
        if m["auc"] is None:
            missing = "positive" if m["positives"] == 0 else "negative"
            notes.append(f"{task}: test AUC is null: none of its {m['rows']} test rows has a "
                         f"{missing} label, and AUC needs both")
    return notes


def evaluate(predictions: Path, label_test: Path, tasks: list[str]) -> dict[str, TaskMetrics]:
    """Score `predictions` (from training or scoring) against the label party's test labels.

    Both files are in common-position order; positions are checked to match row for row. Rows
    that share a position are one person's events: GAUC is then reported too.
    """
    predicted = pq.read_table(predictions)
    truth = FeatureMatrix.read(label_test)
    positions = predicted.column("position").to_numpy()
    if not np.array_equal(positions, FeatureMatrix.positions(label_test)):
        raise ValueError(f"{predictions}: rows do not line up with the test labels in {label_test}")
    people = positions if len(np.unique(positions)) < len(positions) else None
    return {t: task_metrics(truth.labels[t], predicted.column(f"p:{t}").to_numpy(), people)
            for t in tasks}
