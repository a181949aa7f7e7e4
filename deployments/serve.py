"""Serve the pipelines: `train_pipeline` (all parties here) as a deployment, scheduled and from the
UI, beside the `score` flow; with parties apart, the label party's `party_pipeline` the same way (each run starts the
feature parties), and a feature party's endpoint, which runs its part when the label party asks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from splitrec_core.config import load_config
from splitrec_core.federation import PartyView

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment


def retrain_deployment(config: Path, workdir: Path, name: str = "retrain") -> RunnerDeployment:
    """The pipeline as a deployment on the config's cron schedule in its time zone; its
    parameters (config, workdir, epochs, gradient noise, promotion margin) are editable per run
    in the UI."""
    from prefect.schedules import Cron

    from flows.pipeline import train_pipeline

    cfg = load_config(config)
    return train_pipeline.to_deployment(
        name=f"{cfg.name}-{name}",
        schedules=[Cron(cfg.schedule.cron, timezone=cfg.schedule.timezone)],
        parameters={"config_path": str(config.resolve()), "workdir": str(workdir.resolve())},
        description=f"Retrain the split MMoE on {cfg.name}, register the version and promote it "
                    "if it is no worse than the current one",
    )


def score_deployment(config: Path, workdir: Path) -> RunnerDeployment:
    """Batch scoring as a deployment, run from the UI or the API: a run names each party's new
    rows (`inputs`: party → file) and the version (`model`, `current` unless changed)."""
    from flows.score import score_pipeline

    cfg = load_config(config)
    return score_pipeline.to_deployment(
        name=f"{cfg.name}-score",
        parameters={"config_path": str(config.resolve()), "workdir": str(workdir.resolve()),
                    "model": "current"},
        description=f"Score new rows with a registered version of {cfg.name}; the "
                    "predictions stay at the label party",
    )


def serve_pipeline(config: Path, workdir: Path, name: str = "retrain") -> None:
    """Block, retraining on the config's schedule and scoring or retraining whenever the UI or
    the API asks."""
    from prefect import serve

    serve(retrain_deployment(config, workdir, name), score_deployment(config, workdir))


def serve_label_party(view: PartyView, federation: Path, private: Path, workdir: Path) -> None:
    """Block, running the label party's part on the federation's schedule (in its timezone) and
    whenever its UI asks; each run first starts the feature parties' parts."""
    from prefect.schedules import Cron

    from flows.party import party_pipeline

    schedule = view.federation.schedule
    party_pipeline.serve(
        name=f"{view.federation.name}-{view.me}",
        schedules=[Cron(schedule.cron, timezone=schedule.timezone)],
        parameters={"federation": str(federation), "party": view.me, "private": str(private),
                    "workdir": str(workdir), "invite": True},
        description=f"Retrain the split MMoE of federation {view.federation.name} as {view.me}")


def serve_feature_party(view: PartyView, federation: Path, private: Path, workdir: Path) -> None:
    """Block, keeping the feature party's endpoint up; each run the label party starts runs
    this party's `party_pipeline` here, in this party's own Prefect."""
    import time

    from flows.party import party_pipeline
    from splitrec_core.apart import accept_runs

    serving = accept_runs(view, lambda run_id: party_pipeline(
        str(federation), view.me, str(private), run_id, str(workdir)))
    print(f"{view.me}: serving on port {serving.port}; runs start when "
          f"{view.federation.label_party} starts them (Ctrl-C stops)", flush=True)
    while True:
        time.sleep(3600)
