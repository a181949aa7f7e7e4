"""Prefect task: align every party's rows with PSI (the config's protocol)."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from splitrec_core.channel import Limits, LocalHub
from splitrec_core.config import Config
from splitrec_core.psi import Alignment, PsiFiles, align_local
from splitrec_core.workspace import Workspace
from tasks._common import BACKOFF, JITTER, RETRIES, retry_unless_bad_input
from tasks._policies import content_policy


@task(name="psi_align", task_run_name="psi_align",
      retries=RETRIES, retry_delay_seconds=BACKOFF, retry_jitter_factor=JITTER,
      retry_condition_fn=retry_unless_bad_input,
      cache_policy=content_policy(("label_party", "psi")), persist_result=True)
def align_ids(cfg: Config, ids: dict[str, Path], split: Path, workdir: Path) -> Alignment:
    """Intersect all parties' IDs and give each its rows in one common order."""
    space = Workspace(workdir)
    files = {p: PsiFiles.in_run(space, p, path, cfg.psi, cfg.party_file(cfg.party(p), workdir),
                                cfg.party(p).id_column) for p, path in ids.items()}
    return align_local(files, cfg.psi, label_party=cfg.label_party, split_file=split,
                       hub=LocalHub(limits=Limits.in_mb(**cfg.channel.model_dump())),
                       engines=cfg.engines)
