"""Batch scoring as one Prefect flow: pick the version → check new rows → PSI → score."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from splitrec_core.config import load_config
from splitrec_core.errors import InputError
from tasks.notify import report_failure
from tasks.score import align_new_rows, check_new_rows, pick_version, score_rows


@flow(name="score", log_prints=True, on_failure=[report_failure])
def score_pipeline(config_path: str, workdir: str, inputs: dict[str, str],
                   model: str = "current") -> str:
    """Score each party's new rows with the registered version `model`.

    `inputs` maps each party to its file; `model` is `current`, `candidate` or a version ID.
    Returns the label party's predictions file.
    """
    cfg = load_config(Path(config_path))
    root = Path(workdir).resolve()
    parties = [p.name for p in cfg.parties]
    unknown = [name for name in inputs if name not in parties]
    if unknown:
        raise InputError(config_path, None, f"new rows given for {unknown}, which is no party "
                                            f"of the config (its parties: {parties})")
    missing = [name for name in parties if name not in inputs]
    if missing:
        raise InputError(config_path, None, f"no new rows given for {missing}")

    # 1. Every party's part of the version to score with
    folders = pick_version(cfg, model, root)

    # 2. Every party checks its new rows against its part's columns, concurrently
    checks = {p: check_new_rows.submit(cfg, p, folders[p], Path(inputs[p]), root) for p in folders}
    validated = {p: future.result() for p, future in checks.items()}

    # 3. PSI on the new IDs; 4. each party embeds at home, the label party's top scores
    alignment = align_new_rows(cfg, {p: v.ids for p, v in validated.items()},
                               {p: Path(inputs[p]) for p in validated}, root)
    return str(score_rows(cfg, folders, validated, alignment, root).predictions)
