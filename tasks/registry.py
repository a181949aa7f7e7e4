"""Prefect tasks: register a trained version at every party, then promote it if it is no worse."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.logging import get_run_logger

from splitrec_core.config import Config
from splitrec_core.promotion import Verdict, judge_against_champion
from splitrec_core.provenance import fingerprint
from splitrec_core.registry import SharedModel, version_manifest
from splitrec_core.report import Report
from splitrec_core.results import TrainResult
from splitrec_core.workspace import Workspace
from tasks._common import uncached_task_options


@task(name="register", task_run_name="register", **uncached_task_options())
def register_version(cfg: Config, training: TrainResult, exports: dict[str, Path], report: Report,
                     workdir: Path) -> str:
    """Register every party's export as one version; return its ID.

    The ID is taken from the settings and the trained model's test predictions, so a rerun
    registers nothing new.
    """
    version = fingerprint(cfg.model_dump(mode="json"), [training.predictions])[:12]
    metrics = report.version_metrics
    manifests = {p: version_manifest(cfg, cfg.hash(), metrics,
                                     cfg.party_file(cfg.party(p), workdir))
                 for p in exports}
    return SharedModel.of(cfg, workdir).register(version, exports, manifests)


@task(name="promote", task_run_name="promote", **uncached_task_options())
def promote_if_better(cfg: Config, version: str, report: Report, workdir: Path) -> Path:
    """Make `version` the champion at every party if the promotion rule allows it.

    Returns `report/metrics.json`, with the verdict and its reasons added.
    """
    model = SharedModel.of(cfg, workdir)
    verdict = judge_against_champion(model, version, cfg.registry)
    if verdict.promote:
        model.promote(version)
    outcome = ("promoted to current" if verdict.promote
               else f"not promoted ({verdict.champion} stays current)")
    get_run_logger().info("version %s %s: %s", version, outcome, "; ".join(verdict.reasons))
    return record_verdict(report, verdict, workdir)


def record_verdict(report: Report, verdict: Verdict, workdir: Path) -> Path:
    """Write the run's `metrics.json` (the report people read) with the registry's verdict."""
    return report.with_verdict(verdict).save(Workspace(workdir).report / "metrics.json")
