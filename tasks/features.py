"""Prefect task: engineer one party's features."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from splitrec_core.config import Config
from splitrec_core.features import PartyFeatures, build_features
from splitrec_core.workspace import Workspace
from tasks._common import BACKOFF, JITTER, RETRIES, retry_unless_bad_input
from tasks._policies import content_policy


@task(name="build_features", task_run_name="features-{party}",
      retries=RETRIES, retry_delay_seconds=BACKOFF, retry_jitter_factor=JITTER,
      retry_condition_fn=retry_unless_bad_input,
      cache_policy=content_policy(("parties",)), persist_result=True)
def build_party_features(cfg: Config, party: str, validated: Path, aligned: Path,
                         workdir: Path, events: Path | None = None) -> PartyFeatures:
    """Fit and write one party's features to Parquet, using its own training rows only.

    `events`: at a label party that holds events, each row's person (from validation).
    """
    return build_features(cfg.party(party), validated, aligned, Workspace(workdir).features(party),
                          cfg.party(party).engine, events)
