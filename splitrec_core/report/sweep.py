"""The comparison `splitrec sweep` writes: one row per grid point, test AUC per task."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def sweep_table(rows: Sequence[Mapping[str, Any]], tasks: Sequence[str]) -> str:
    """A Markdown table of sweep results: one row per grid point, test AUC per task."""
    head = ("| experts | expert units | task weights | "
            + " | ".join(f"{t} AUC" for t in tasks) + " |")
    lines = [head, "|" + "---|" * (3 + len(tasks))]
    for row in rows:
        scores: dict[str, float | None] = row["auc"]
        aucs = " | ".join("n/a" if scores[t] is None else f"{scores[t]:.4f}" for t in tasks)
        lines.append(f"| {row['num_experts']} | {row['expert_units']} | {row['task_weights']} "
                     f"| {aucs} |")
    return "\n".join(lines) + "\n"
