"""Prefect task: check one party's input file."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from splitrec_core.config import Config
from splitrec_core.validate import ValidatedParty, validate_party
from splitrec_core.workspace import Workspace
from tasks._common import BACKOFF, JITTER, RETRIES, retry_unless_bad_input
from tasks._policies import content_policy


@task(name="validate", task_run_name="validate-{party}",
      retries=RETRIES, retry_delay_seconds=BACKOFF, retry_jitter_factor=JITTER,
      retry_condition_fn=retry_unless_bad_input,
      cache_policy=content_policy(("label_party", "parties", "tasks", "psi")), persist_result=True)
def validate_input(cfg: Config, party: str, party_file: Path, workdir: Path) -> ValidatedParty:
    """Check `party_file` for `party` and write its typed copy into the party's workspace."""
    tasks = cfg.tasks if party == cfg.label_party else None
    return validate_party(cfg.party(party), party_file, Workspace(workdir).validated(party), tasks,
                          cfg.psi.normalize, cfg.party(party).engine)
