"""A run's report in words and tables: the lines the terminal ends with, and `report.md`.

Both are drawn from the run's `Report` (`metrics.json`); `report.md` also holds the plots
(`plots`), drawn from the label party's training history and test predictions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from splitrec_core.registry.promotion import Verdict
    from splitrec_core.report.metrics import Report

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


def verdict_line(verdict: Verdict) -> str:
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
        lines.append(verdict_line(report.promotion))
    lines.extend(f"note: {note}" for note in report.notes)
    lines.append(f"report: {metrics_file} and {metrics_file.with_name('report.md')}; "
                 f"exports: {exports}/<party>")
    return "\n".join(lines)


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
