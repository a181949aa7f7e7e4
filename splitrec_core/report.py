"""A run's report for people: the few lines the terminal ends with, and `report.md`.

`report.md` has small PNG plots embedded (so the Prefect UI shows them without a file server).
Both are drawn from the run's `Report` (`metrics.json`) and the label party's training history
and test predictions.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.parquet as pq

from splitrec_core.io import read_json

if TYPE_CHECKING:
    from splitrec_core.evaluate import Report
    from splitrec_core.promotion import Verdict

MB = 1e6


def _auc(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _rates(m: dict[str, Any]) -> str:
    """Calibration: the mean predicted probability and the observed rate of positives."""
    if m.get("predicted_rate") is None:  # a report written before calibration was measured
        return "n/a"
    return f"{m['predicted_rate']:.4f} / {m['observed_rate']:.4f}"


def task_rows(report: Report) -> list[dict[str, object]]:
    """Per task: test AUC, GAUC, log loss, calibration, baselines, lift, leakage.

    GAUC is there when the label party holds events; the baselines are the label party alone
    and central training (if run). The leakage columns are the attacks' AUCs. Figures are
    rounded for reading.
    """
    rows: list[dict[str, object]] = []
    lifts = report.lift
    for task, m in report.tasks.items():
        lift, leak = lifts[task], report.leakage[task]
        rows.append({
            "task": task, "AUC": _auc(m["auc"]),
            **({"GAUC": _auc(m["gauc"])} if "gauc" in m else {}),
            "log loss": f"{m['logloss']:.4f}", "predicted / observed": _rates(m),
            "label party alone": _auc(lift["label_only"]),
            **({"central": _auc(lift["central"])} if report.central is not None else {}),
            "lift": "n/a" if lift["lift"] is None else f"{lift['lift']:+.4f}",
            "leakage norm / cosine": f"{leak['norm_auc']:.3f} / {leak['cosine_auc']:.3f}",
        })
    return rows


def traffic_rows(report: Report) -> list[dict[str, object]]:
    """Bytes and messages per message kind, largest first."""
    kinds = sorted(report.channel.items(), key=lambda item: -item[1]["bytes"])
    return [{"kind": k, "MB": round(v["bytes"] / MB, 2), "messages": v["messages"]}
            for k, v in kinds]


def _text_table(rows: list[dict[str, object]]) -> list[str]:
    columns = list(rows[0])
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    return [line] + ["  ".join(str(r[c]).ljust(w) for c, w in zip(columns, widths, strict=True))
                     for r in rows]


def _verdict_line(verdict: Verdict) -> str:
    """The registry's verdict in one line."""
    outcome = ("promoted to current" if verdict.promote
               else f"not promoted, {verdict.champion} stays current")
    return f"model version {verdict.version}: {outcome} ({'; '.join(verdict.reasons)})"


def terminal_summary(report: Report, metrics_file: Path, exports: Path) -> str:
    """The lines a run ends with.

    Per task AUC, log loss, label party alone, central, leakage; bytes sent; the registry's
    verdict; where the report (`metrics_file` and `report.md` beside it) and the exports are.
    """
    sent = report.channel.values()
    psi = sum(v["bytes"] for k, v in report.channel.items() if k.startswith("psi"))
    training = report.training
    lines = _text_table(task_rows(report))
    lines.append(f"sent between parties: {sum(v['bytes'] for v in sent) / MB:,.1f} MB in "
                 f"{sum(v['messages'] for v in sent):,} messages (PSI {psi / MB:,.1f} MB); "
                 f"{training['epochs_run']} epochs, kept {training['best_epoch']}, "
                 f"{training['rows_per_s']:,.0f} rows/s, "
                 f"{training['cpu_s_per_1k_rows']:.3g} CPU s per 1,000 rows")
    if report.promotion is not None:
        lines.append(_verdict_line(report.promotion))
    lines.extend(f"note: {note}" for note in report.notes)
    lines.append(f"report: {metrics_file} and {metrics_file.with_name('report.md')}; "
                 f"exports: {exports}/<party>")
    return "\n".join(lines)


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


def _markdown_table(rows: list[dict[str, object]]) -> list[str]:
    columns = list(rows[0])
    return (["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            + ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows])


def markdown_report(name: str, report: Report, drawn: list[str]) -> str:
    """`report.md`: the tables of the terminal summary, the traffic, the verdict and the plots.

    The traffic is per message kind; the verdict is the model registry's; `drawn` are
    `run_plots`' three plots.
    """
    curves, gates, scores = drawn
    training = report.training
    sizes = (f"{report.intersection:,} people shared by every party "
             f"({report.train_rows:,} training, {report.test_rows:,} test). "
             f"{training['epochs_run']} epochs, weights of epoch {training['best_epoch']} kept, "
             f"{training['rows_per_s']:,.0f} rows/s, "
             f"{training['cpu_s_per_1k_rows']:.3g} CPU seconds per 1,000 rows.")
    lines = [f"# {name}: split MMoE run report", "", sizes, "", "## Test metrics per task", "",
             *_markdown_table(task_rows(report)), ""]
    lines += [f"> {note}" for note in report.notes]
    verdict = report.promotion
    if verdict is not None:
        outcome = ("**promoted to current**" if verdict.promote
                   else f"**not promoted**: `{verdict.champion}` stays current")
        lines += ["## Model registry", "", f"Version `{verdict.version}`: {outcome}.", "",
                  *(f"- {reason}" for reason in verdict.reasons), ""]
    lines += ["## Training", "", curves, "", gates, "", "## Test scores", "", scores, "",
              "## What crossed between parties", "", *_markdown_table(traffic_rows(report)), ""]
    return "\n".join(lines)
