"""Prefect task: export one party's trained model (TensorFlow loads only when it runs)."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from splitrec_core.config import Config
from splitrec_core.workspace import Workspace
from tasks._common import BACKOFF, JITTER, RETRIES, retry_unless_bad_input
from tasks._policies import content_policy


@task(name="export", task_run_name="export-{party}",
      retries=RETRIES, retry_delay_seconds=BACKOFF, retry_jitter_factor=JITTER,
      retry_condition_fn=retry_unless_bad_input,
      cache_policy=content_policy(), persist_result=True)
def export_model(cfg: Config, party: str, bottom: Path, transform: Path, workdir: Path,
                 top: Path | None = None) -> Path:
    """Write the party's SavedModel, transform and manifest (and the top at the label party)."""
    from splitrec_core.export import export_party

    return export_party(cfg, party, bottom, transform, Workspace(workdir).export(party), top)
