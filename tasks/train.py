"""Prefect tasks: split training across the parties, and the centralised baseline.

TensorFlow is imported inside the task bodies, so a fully cached rerun never pays for loading it.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task

from splitrec_core.config import Config
from splitrec_core.features import PartyFeatures
from splitrec_core.results import TrainResult
from splitrec_core.workspace import Workspace
from tasks._common import BACKOFF, JITTER, RETRIES, retry_unless_bad_input
from tasks._policies import content_policy
from tasks._progress import epoch_progress


@task(name="train_split_mmoe", task_run_name="train_split_mmoe",
      retries=RETRIES, retry_delay_seconds=BACKOFF, retry_jitter_factor=JITTER,
      retry_condition_fn=retry_unless_bad_input,
      cache_policy=content_policy(), persist_result=True)
def train_split(cfg: Config, features: dict[str, PartyFeatures], workdir: Path) -> TrainResult:
    """Train the split MMoE; each party's model goes to its own workspace.

    The run's page shows a progress artifact, updated every epoch.
    """
    from splitrec_core.training.local import train_split_local

    space = Workspace(workdir)
    with epoch_progress(cfg) as progress:
        result = train_split_local(cfg, features, {p: space.trained(p) for p in features})
    progress.done(result)
    return result


@task(name="train_label_only", task_run_name="train_label_only",
      retries=RETRIES, retry_delay_seconds=BACKOFF, retry_jitter_factor=JITTER,
      retry_condition_fn=retry_unless_bad_input,
      cache_policy=content_policy(), persist_result=True)
def train_label_only(cfg: Config, features: PartyFeatures, workdir: Path) -> TrainResult:
    """Train the same model on the label party's own columns (none: its base rate).

    It is what federating is measured against.
    """
    from splitrec_core.training.central import train_label_alone

    return train_label_alone(cfg, features, Workspace(workdir).label_only(cfg.label_party))


@task(name="train_centralized", task_run_name="train_centralized",
      retries=RETRIES, retry_delay_seconds=BACKOFF, retry_jitter_factor=JITTER,
      retry_condition_fn=retry_unless_bad_input,
      cache_policy=content_policy(), persist_result=True)
def train_centralized(cfg: Config, features: dict[str, PartyFeatures],
                      workdir: Path) -> TrainResult:
    """Train the same model on all columns pooled: the baseline the split model is held to."""
    from splitrec_core.training.central import train_central

    return train_central(cfg, features, Workspace(workdir).central)
