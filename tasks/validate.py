"""Prefect task: check one party's raw table."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from splitrec_core.config import parse_config
from splitrec_core.validate import validate_party
from splitrec_core.workspace import Workspace
from tasks._common import task_options


@task(name="validate", task_run_name="validate-{party}",
      **task_options(("label_party", "parties", "tasks", "psi")))
def validate_input(cfg: dict, party: str, raw: Path, workdir: Path) -> dict[str, Path | None]:
    """Check `raw` for `party` and write its typed copy into the party's workspace."""
    config = parse_config(cfg)
    tasks = config.tasks if party == config.label_party else None
    result = validate_party(config.party(party), raw, Workspace(workdir).validated(party), tasks,
                            config.psi.normalize)
    return {"ids": result.ids, "table": result.table, "split": result.split}
