"""A run's report: `metrics.json` (`metrics`), and for people the terminal's lines and `report.md`.

`text` writes the words and tables, `plots` the pictures, `sweep` a sweep's comparison.
"""

from splitrec_core.report.metrics import Report, VersionMetrics
from splitrec_core.report.plots import plots, run_plots
from splitrec_core.report.sweep import sweep_table
from splitrec_core.report.text import (
    markdown_report,
    task_rows,
    terminal_summary,
    traffic_rows,
    verdict_line,
)

__all__ = ["Report", "VersionMetrics", "markdown_report", "plots", "run_plots", "sweep_table",
           "task_rows", "terminal_summary", "traffic_rows", "verdict_line"]
