"""Prefect task: engineer one party's features."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from splitrec_core.config import parse_config
from splitrec_core.features import build_features
from splitrec_core.workspace import Workspace
from tasks._common import task_options


@task(name="build_features", task_run_name="features-{party}", **task_options(("parties",)))
def build_party_features(cfg: dict, party: str, validated: Path, aligned: Path,
                         workdir: Path) -> dict[str, Path]:
    """Fit and write one party's features to Parquet, using its own training rows only."""
    config = parse_config(cfg)
    out = build_features(config.party(party), validated, aligned, Workspace(workdir).features(party))
    return {"train": out.train, "test": out.test, "transform": out.transform}
