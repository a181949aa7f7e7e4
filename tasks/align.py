"""Prefect task: align every party's rows with ECDH PSI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from splitrec_core.align import align_local
from splitrec_core.config import parse_config
from splitrec_core.workspace import Workspace
from tasks._common import task_options


@task(name="psi_align", task_run_name="psi_align", **task_options(("label_party", "psi")))
def align_ids(cfg: dict, ids: dict[str, Path], split: Path, workdir: Path) -> dict[str, Any]:
    """Intersect all parties' IDs and give each its rows in one common order."""
    config = parse_config(cfg)
    space = Workspace(workdir)
    unmatched = {p: space.unmatched(p) for p in ids} if config.psi.write_unmatched else None
    alignment = align_local(ids, split, config.label_party,
                            {p: space.aligned(p) for p in ids}, config.psi.domain,
                            config.psi.chunk_size, unmatched_files=unmatched)
    return {"files": alignment.files, "intersection": alignment.intersection,
            "train_rows": alignment.train_rows, "test_rows": alignment.test_rows,
            "channel": alignment.channel}
