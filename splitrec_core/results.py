"""What a training run hands on to evaluation and export: paths and figures.

It lives apart from the training code, which loads TensorFlow: a rerun whose training tasks are
all cached reads these results back, and must not pay for loading TensorFlow to do so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TrainResult:
    """What training wrote and measured."""

    models: dict[str, Path]
    predictions: Path
    history: Path
    rows_per_s: float  # training rows fitted per second over `train_s`
    cpu_s_per_1k_rows: float  # CPU seconds of the parties' processes over `train_s`, per 1,000
    #                           of those rows (`training.local.label_result` says whose)
    train_s: float     # the epochs of this run, validation included, tracing not
    startup_s: float   # tracing (with XLA, compiling) every party's steps, before the first batch
    epochs_run: int
    best_epoch: int
    channel: dict[str, dict[str, int]]
    leakage: dict[str, dict[str, float]]
    resumed_after_epoch: int = 0
    activity_auc: float | None = None  # with events: the leakage audit's activity attack

    @property
    def speed(self) -> dict[str, float | int]:
        """The report's `training` section.

        That is rows/s and the seconds they are over, the CPU seconds per 1,000 of those rows,
        start-up, and the epochs run and kept.
        """
        return {"rows_per_s": self.rows_per_s, "train_s": self.train_s,
                "cpu_s_per_1k_rows": self.cpu_s_per_1k_rows,
                "startup_s": self.startup_s, "epochs_run": self.epochs_run,
                "best_epoch": self.best_epoch}
