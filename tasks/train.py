"""Prefect tasks: split training across the parties, and the centralised baseline.

TensorFlow is imported inside the task bodies, so a fully cached rerun never pays for loading it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task

from splitrec_core.config import parse_config
from splitrec_core.workspace import Workspace
from tasks._common import task_options

if TYPE_CHECKING:
    from splitrec_core.train import TrainResult


def _summary(result: TrainResult) -> dict[str, Any]:
    return {"models": result.models, "predictions": result.predictions,
            "history": result.history, "channel": result.channel, "leakage": result.leakage,
            "training": {"rows_per_s": result.rows_per_s, "startup_s": result.startup_s,
                         "epochs_run": result.epochs_run, "best_epoch": result.best_epoch}}


@task(name="train_split_mmoe", task_run_name="train_split_mmoe", **task_options())
def train_split(cfg: dict, features: dict[str, dict[str, Path]], workdir: Path) -> dict[str, Any]:
    """Train the split MMoE; each party's model goes to its own workspace."""
    from splitrec_core.train import train_split_local

    space = Workspace(workdir)
    return _summary(train_split_local(parse_config(cfg), features,
                                      {p: space.trained(p) for p in features}))


@task(name="train_label_only", task_run_name="train_label_only", **task_options())
def train_label_only(cfg: dict, features: dict[str, Path], workdir: Path) -> dict[str, Any]:
    """Train the same model on the label party's own columns: what federating is measured against."""
    from splitrec_core.train import train_central

    config = parse_config(cfg)
    return _summary(train_central(config, {config.label_party: features},
                                  Workspace(workdir).label_only(config.label_party)))


@task(name="train_centralized", task_run_name="train_centralized", **task_options())
def train_centralized(cfg: dict, features: dict[str, dict[str, Path]], workdir: Path) -> dict[str, Any]:
    """Train the same model on all columns pooled: the baseline the split model is held to."""
    from splitrec_core.train import train_central

    return _summary(train_central(parse_config(cfg), features, Workspace(workdir).central))
