"""Serve `train_pipeline` as a deployment: scheduled retraining plus runs triggered from the UI."""

from __future__ import annotations

from pathlib import Path

from splitrec_core.config import load_config


def serve_pipeline(config: Path, workdir: Path, name: str = "retrain") -> None:
    """Block, running the pipeline on the config's cron schedule and whenever the UI asks."""
    from flows.pipeline import train_pipeline

    cfg = load_config(config)
    train_pipeline.serve(
        name=f"{cfg.name}-{name}",
        cron=cfg.schedule.cron,
        parameters={"config_path": str(config.resolve()), "workdir": str(workdir.resolve())},
        description=f"Retrain the split MMoE on {cfg.name} ({cfg.schedule.cron}, {cfg.schedule.timezone})",
    )
