"""A run's report for people: the few lines the terminal ends with, and `report.md` with small
PNG plots embedded (so the Prefect UI shows them without a file server), both drawn from
`metrics.json` and the label party's training history and test predictions."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np

MB = 1e6


def _auc(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def task_rows(metrics: dict[str, Any]) -> list[dict[str, object]]:
    """Per task: test AUC and log loss, the label party alone, central (if run), the lift and
    the leakage attacks; rounded for reading."""
    rows = []
    for task, m in metrics["tasks"].items():
        lift, leak = metrics["lift"][task], metrics["leakage"][task]
        rows.append({
            "task": task, "AUC": _auc(m["auc"]), "log loss": f"{m['logloss']:.4f}",
            "label party alone": _auc(lift["label_only"]),
            **({"central": _auc(lift["central"])} if "central" in metrics else {}),
            "lift": "n/a" if lift["lift"] is None else f"{lift['lift']:+.4f}",
            "leakage norm / cosine": f"{leak['norm_auc']:.3f} / {leak['cosine_auc']:.3f}",
        })
    return rows


def traffic_rows(metrics: dict[str, Any]) -> list[dict[str, object]]:
    """Bytes and messages per message kind, largest first."""
    kinds = sorted(metrics["channel"].items(), key=lambda item: -item[1]["bytes"])
    return [{"kind": k, "MB": round(v["bytes"] / MB, 2), "messages": v["messages"]}
            for k, v in kinds]


def _text_table(rows: list[dict[str, object]]) -> list[str]:
    columns = list(rows[0])
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    return [line] + ["  ".join(str(r[c]).ljust(w) for c, w in zip(columns, widths, strict=True))
                     for r in rows]


def terminal_summary(metrics: dict[str, Any], report: Path, exports: Path) -> str:
    """The lines a run ends with: per task AUC, log loss, label party alone, central, leakage;
    bytes sent; the registry's verdict; where the report and the exports are."""
    sent = metrics["channel"].values()
    psi = sum(v["bytes"] for k, v in metrics["channel"].items() if k.startswith("psi"))
    lines = _text_table(task_rows(metrics))
    lines.append(f"sent between parties: {sum(v['bytes'] for v in sent) / MB:,.1f} MB in "
                 f"{sum(v['messages'] for v in sent):,} messages (PSI {psi / MB:,.1f} MB); "
                 f"{metrics['training']['epochs_run']} epochs, kept "
                 f"{metrics['training']['best_epoch']}, {metrics['training']['rows_per_s']:,.0f} "
                 "rows/s")
    if "promotion" in metrics:
        verdict = metrics["promotion"]
        outcome = "promoted to current" if verdict["promote"] else \
            f"not promoted, {verdict['champion']} stays current"
        lines.append(f"model version {verdict['version']}: {outcome} ({'; '.join(verdict['reasons'])})")
    lines.extend(f"note: {note}" for note in metrics["notes"])
    lines.append(f"report: {report} and {report.with_name('report.md')}; exports: {exports}/<party>")
    return "\n".join(lines)


def _png(figure: Any) -> str:
    """A Matplotlib figure as a Markdown image with a base64 data URI."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=72, bbox_inches="tight")
    plt.close(figure)
    return f"![plot](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()})"


def _plots(history: dict[str, Any], probabilities: dict[str, np.ndarray]) -> list[str]:
    """Per epoch loss and validation AUC per task; gate use per expert per task at the kept
    epoch; the distribution of test scores per task."""
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


def markdown_report(name: str, metrics: dict[str, Any], history: dict[str, Any],
                    probabilities: dict[str, np.ndarray]) -> str:
    """`report.md`: the tables of the terminal summary, the traffic per message kind, the
    registry's verdict, and the plots."""
    curves, gates, scores = _plots(history, probabilities)
    training = metrics["training"]
    sizes = (f"{metrics['psi']['intersection']:,} people shared by every party "
             f"({metrics['rows']['train']:,} training, {metrics['rows']['test']:,} test). "
             f"{training['epochs_run']} epochs, weights of epoch {training['best_epoch']} kept, "
             f"{training['rows_per_s']:,.0f} rows/s.")
    lines = [f"# {name}: split MMoE run report", "", sizes, "", "## Test metrics per task", "",
             *_markdown_table(task_rows(metrics)), ""]
    lines += [f"> {note}" for note in metrics["notes"]]
    if "promotion" in metrics:
        verdict = metrics["promotion"]
        outcome = "**promoted to current**" if verdict["promote"] else \
            f"**not promoted**: `{verdict['champion']}` stays current"
        lines += ["## Model registry", "", f"Version `{verdict['version']}`: {outcome}.", "",
                  *(f"- {reason}" for reason in verdict["reasons"]), ""]
    lines += ["## Training", "", curves, "", gates, "", "## Test scores", "", scores, "",
              "## What crossed between parties", "", *_markdown_table(traffic_rows(metrics)), ""]
    return "\n".join(lines)
