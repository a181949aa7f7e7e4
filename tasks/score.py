"""Prefect tasks for scoring new rows with a registered version.

They pick the version, check each party's rows, align them with PSI and score them (embeddings
cross, predictions stay at the label party).
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.runtime import flow_run

from splitrec_core.channel import Limits, LocalHub
from splitrec_core.config import Config
from splitrec_core.psi import Alignment, PsiFiles, align_local
from splitrec_core.registry import SharedModel
from splitrec_core.scoring import Scored, score_local, validate_new_rows
from splitrec_core.validate import ValidatedParty
from splitrec_core.workspace import Workspace
from tasks._common import BACKOFF, JITTER, RETRIES, retry_unless_bad_input
from tasks._policies import content_policy


@task(name="pick_version", task_run_name="pick-version-{model}",
      retries=RETRIES, retry_delay_seconds=BACKOFF, retry_jitter_factor=JITTER,
      retry_condition_fn=retry_unless_bad_input,
      cache_policy=NO_CACHE, persist_result=False)
def pick_version(cfg: Config, model: str, workdir: Path) -> dict[str, Path]:
    """Every party's folder of the version `model` names (an alias is read now, never cached)."""
    return SharedModel.of(cfg, workdir).parts(model)


@task(name="validate_new_rows", task_run_name="validate-new-rows-{party}",
      retries=RETRIES, retry_delay_seconds=BACKOFF, retry_jitter_factor=JITTER,
      retry_condition_fn=retry_unless_bad_input,
      cache_policy=content_policy(("psi",)), persist_result=True)
def check_new_rows(cfg: Config, party: str, version_folder: Path, rows: Path,
                   workdir: Path) -> ValidatedParty:
    """Check `party`'s new rows against the columns its part of the version takes."""
    return validate_new_rows(party, version_folder, rows,
                             Workspace(workdir).scoring(party) / "validated",
                             cfg.psi.normalize, cfg.party(party).engine)


@task(name="psi_align_new_rows", task_run_name="psi_align_new_rows",
      retries=RETRIES, retry_delay_seconds=BACKOFF, retry_jitter_factor=JITTER,
      retry_condition_fn=retry_unless_bad_input,
      cache_policy=content_policy(("label_party", "psi")), persist_result=True)
def align_new_rows(cfg: Config, ids: dict[str, Path], rows: dict[str, Path],
                   workdir: Path) -> Alignment:
    """Intersect the parties' new IDs, read from their new `rows` (no train/test flag crosses)."""
    space = Workspace(workdir)
    files = {p: PsiFiles(path, space.scoring(p) / "aligned.parquet", None, rows[p],
                         cfg.party(p).id_column) for p, path in ids.items()}
    return align_local(files, cfg.psi, label_party=cfg.label_party, split_file=None,
                       hub=LocalHub(limits=Limits.in_mb(**cfg.channel.model_dump())),
                       engines=cfg.engines)


@task(name="score", task_run_name="score",
      retries=RETRIES, retry_delay_seconds=BACKOFF, retry_jitter_factor=JITTER,
      retry_condition_fn=retry_unless_bad_input,
      cache_policy=content_policy(("label_party",)), persist_result=True)
def score_rows(cfg: Config, version_folders: dict[str, Path], validated: dict[str, ValidatedParty],
               alignment: Alignment, workdir: Path) -> Scored:
    """Score the aligned rows.

    The predictions go to the label party's `scores/<version>-score-<flow run>.parquet`.
    """
    version = version_folders[cfg.label_party].name
    run = f"score-{flow_run.get_id()}"[:14]
    out = Workspace(workdir).scores_file(cfg.label_party, version, run)
    scored = score_local(version_folders, validated, alignment.files, cfg.label_party, out,
                         LocalHub(limits=Limits.in_mb(**cfg.channel.model_dump())))
    get_run_logger().info("scored %d rows with version %s at %.0f rows/s: %s", scored.rows,
                          version, scored.rows / scored.seconds, out)
    return scored
