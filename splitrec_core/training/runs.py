"""What a party's training loop runs on, what a finished run hands back, and its result files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pyarrow as pa

from splitrec_core.config import Config
from splitrec_core.features import FeatureMatrix
from splitrec_core.io import atomic_path, write_json, write_parquet
from splitrec_core.results import TrainResult
from splitrec_core.training.checkpoint import Checkpoints
from splitrec_core.training.epochs import History, Plan
from splitrec_core.training.event_matrix import EventMatrix
from splitrec_core.training.local_updates import LocalSettings
from splitrec_core.training.streaming import StreamedFeatures
from splitrec_core.training.wire import FLOAT32, Wire


@dataclass(frozen=True)
class LoopSettings:
    """What a party's training loop runs on besides its trainer and its channel.

    Attributes:
        train: its training rows (read whole, or streamed; the label party's events).
        test: its test rows, embedded or scored after the last epoch.
        plan: the epochs every party shares (batches, validation rows, patience).
        checkpoints: where it keeps the state to resume from.
        start_epoch: the epoch every party resumes after (0: from scratch).
        wire: how embeddings and gradients cross the channel.
        per_message: training batches per message.
        ahead: messages a feature party embeds before it waits for gradients (see
            `bottom_epoch`); the label party does not read it.
        local: the worksets of local updates (`local_updates`); None: none.
    """

    train: FeatureMatrix | StreamedFeatures | EventMatrix
    test: FeatureMatrix | StreamedFeatures | EventMatrix
    plan: Plan
    checkpoints: Checkpoints
    start_epoch: int = 0
    wire: Wire = FLOAT32
    per_message: int = 1
    ahead: int = 0
    local: LocalSettings | None = None


@dataclass(frozen=True)
class TrainedRun:
    """What a finished training run hands to `write_result`.

    Attributes:
        history: its epochs' losses, validation AUCs and gate use.
        probabilities: the test rows' predictions `[rows, tasks]`, in common-position order.
        fit_rows: rows fitted per epoch (the training rows less the validation rows).
        startup_s: seconds spent tracing (and with XLA compiling) before the first batch.
        train_s: seconds of training, validation included.
        cpu_s: the CPU seconds every process of the run spent over `train_s`, summed
            (`total_cpu_s`).
        models: the saved models by name.
        channel: traffic per message kind.
        leakage: the leakage audit of the gradients the label party sent.
        activity_auc: with events, the audit's activity attack (None otherwise).
        resumed_after_epoch: the epoch every party had checkpointed (0: from scratch).
    """

    history: History
    probabilities: np.ndarray
    fit_rows: int
    startup_s: float
    train_s: float
    cpu_s: float
    models: dict[str, Path]
    channel: dict[str, dict[str, int]] = field(default_factory=dict)
    leakage: dict[str, dict[str, float]] = field(default_factory=dict)
    activity_auc: float | None = None
    resumed_after_epoch: int = 0


def save_model(model: keras.Model, path: Path) -> Path:
    """Save `model` atomically to `path` (a `.keras` file)."""
    with atomic_path(path) as tmp:
        model.save(tmp)
    return path


def write_result(cfg: Config, run: TrainedRun, *, label_test: Path, out_dir: Path) -> TrainResult:
    """Write the run's test predictions and training history to `out_dir`.

    The predictions are in common-position order, the positions those of `label_test` (the label
    party's test features).
    """
    tasks = cfg.task_names
    columns = {"position": FeatureMatrix.positions(label_test)}
    columns |= {f"p:{t}": run.probabilities[:, j] for j, t in enumerate(tasks)}
    epochs_run = len(run.history.seconds)
    rows_fitted = (epochs_run - run.resumed_after_epoch) * run.fit_rows
    return TrainResult(
        models=run.models,
        predictions=write_parquet(pa.table(columns), out_dir / "predictions.parquet"),
        history=write_json(run.history.as_json(tasks), out_dir / "history.json"),
        rows_per_s=rows_fitted / run.train_s,
        cpu_s_per_1k_rows=1000 * run.cpu_s / rows_fitted,
        train_s=run.train_s,
        startup_s=run.startup_s,
        epochs_run=epochs_run,
        best_epoch=run.history.best_epoch,
        channel=run.channel,
        leakage=run.leakage,
        activity_auc=run.activity_auc,
        resumed_after_epoch=run.resumed_after_epoch,
    )
