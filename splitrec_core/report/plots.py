"""The report's plots: small PNGs as Markdown images with data URIs, which the UI shows."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from splitrec_core.io import read_json


def _png(figure: Any) -> str:
    """A Matplotlib figure as a Markdown image with a base64 data URI."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=72, bbox_inches="tight")
    plt.close(figure)
    return f"![plot](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()})"


def run_plots(history: Path, predictions: Path, tasks: list[str]) -> list[str]:
    """The report's plots of a run's training `history` and test `predictions` (their files).

    Each is a Markdown image: loss and validation AUC, gate use, test scores (`plots`).
    """
    table = pq.read_table(predictions, columns=[f"p:{t}" for t in tasks])
    return plots(read_json(history), {t: table.column(f"p:{t}").to_numpy() for t in tasks})


def plots(history: dict[str, Any], probabilities: dict[str, np.ndarray]) -> list[str]:
    """The report's plots, per task: loss and validation AUC, gate use, test scores.

    Loss and validation AUC are per epoch; gate use is per expert at the kept epoch; the test
    scores are a distribution.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(history["task_loss"])
    figure, (loss, auc) = plt.subplots(1, 2, figsize=(8, 2.6))
    for task in tasks:
        epochs = np.arange(1, len(history["task_loss"][task]) + 1)
        loss.plot(epochs, history["task_loss"][task], label=task)
        if history["val_auc"][task]:
            auc.plot(epochs[:len(history["val_auc"][task])], history["val_auc"][task], label=task)
    for axis, title in ((loss, "training loss"), (auc, "validation AUC")):
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.axvline(history["best_epoch"], color="grey", linestyle=":", linewidth=1)
    loss.legend(fontsize=7)
    curves = _png(figure)

    kept = history["best_epoch"] - 1
    gates = np.array([history["gate_mean"][t][kept] for t in tasks])
    figure, axis = plt.subplots(figsize=(5, 0.6 + 0.5 * len(tasks)))
    shown = axis.imshow(gates, aspect="auto", cmap="viridis", vmin=0)
    axis.set_yticks(range(len(tasks)), tasks)
    axis.set_xticks(range(gates.shape[1]))
    axis.set_xlabel("expert")
    axis.set_title(f"gate weight per expert (epoch {kept + 1})")
    figure.colorbar(shown, ax=axis)
    gate_map = _png(figure)

    figure, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 2.4), squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=True):
        # over [0, 1], the scores' own range: scores a float32 ulp apart cannot be cut in 40
        axis.hist(probabilities[task], bins=40, range=(0.0, 1.0), color="tab:blue")
        axis.set_yscale("log")
        axis.set_title(f"{task}: test scores")
    scores = _png(figure)
    return [curves, gate_map, scores]
