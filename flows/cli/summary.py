"""The closing lines `splitrec run` and `splitrec party run` print."""

from __future__ import annotations

from pathlib import Path

import typer


def print_summary(report: Path) -> None:
    """Print the run's closing lines: per task metrics, traffic, the registry's verdict, where.

    Where things are: the report and the exported models beside it.
    """
    from splitrec_core.report import Report, terminal_summary

    typer.echo(terminal_summary(Report.load(report), report, report.parent.parent / "export"))
