"""Serve the pipelines as deployments, scheduled and from the UI.

`train_pipeline` (all parties here) beside the `score` flow; with parties apart, the label
party's `party_pipeline` and `party_score` the same way (each run starts the feature parties),
and a feature party's endpoint, which runs its part when the label party asks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from splitrec_core.config import load_config
from splitrec_core.federation import PartyFiles, PartyView

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

    from splitrec_core.apart.jobs import Job


def retrain_deployment(config: Path, workdir: Path, name: str = "retrain") -> RunnerDeployment:
    """The pipeline as a deployment on the config's cron schedule in its time zone.

    Its parameters (config, workdir, epochs, gradient noise, promotion margin) are editable per
    run in the UI.
    """
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
    """Batch scoring as a deployment, run from the UI or the API.

    A run names each party's new rows (`inputs`: party → file) and the version (`model`,
    `current` unless changed).
    """
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
    """Block, retraining on the config's schedule and scoring or retraining on request.

    A request comes from the UI or the API.
    """
    from prefect import serve

    serve(retrain_deployment(config, workdir, name), score_deployment(config, workdir))


def label_party_deployments(view: PartyView, files: PartyFiles) -> list[RunnerDeployment]:
    """The label party's retrain and score deployments, from its `view` and its `files`.

    Retraining is on the federation's schedule in its time zone; each run of either first starts
    the feature parties' parts. A run's `files` say where the label party's files are.
    """
    from prefect.schedules import Cron

    from flows.party import party_flows

    party_pipeline, party_score = party_flows(view.config.party(view.me).engine)
    schedule, name = view.federation.schedule, view.federation.name
    common = {"files": files.model_dump(mode="json"), "invite": True}
    return [
        party_pipeline.to_deployment(
            name=f"{name}-{view.me}", schedules=[Cron(schedule.cron, timezone=schedule.timezone)],
            parameters=common,
            description=f"Retrain the split MMoE of federation {name} as {view.me}"),
        party_score.to_deployment(
            name=f"{name}-{view.me}-score", parameters=common | {"model": "current"},
            description=f"Score every party's new rows (each party's score_input unless a "
                        f"run names other rows here) with a registered version of {name}"),
    ]


def serve_label_party(view: PartyView, files: PartyFiles) -> None:
    """Block, retraining on the federation's schedule and retraining or scoring on request.

    A request comes from the label party's UI.
    """
    from prefect import serve

    serve(*label_party_deployments(view, files))


def feature_party_jobs(view: PartyView, files: PartyFiles) -> dict[Job, Callable[[str], object]]:
    """What a serving feature party runs when the label party asks, by job.

    Its `party_pipeline`, its `party_score` on its `score_input` (only if its private file names
    one), a move of its registry's aliases; each flow in this party's own Prefect.
    """
    from flows.party import party_flows
    from splitrec_core.apart.jobs import Job
    from splitrec_core.apart.registry_protocol import move_apart
    from splitrec_core.workspace import Workspace

    party_pipeline, party_score = party_flows(view.config.party(view.me).engine)
    jobs: dict[Job, Callable[[str], object]] = {
        Job.TRAIN: lambda run_id: party_pipeline(files, run_id=run_id),
        Job.MODELS: lambda run_id: move_apart(view, run_id, None, Workspace(files.workdir)),
    }
    if view.private.score_input:
        jobs[Job.SCORE] = lambda run_id: party_score(files, run_id=run_id)
    return jobs


def serve_feature_party(view: PartyView, files: PartyFiles) -> None:
    """Block, keeping the feature party's endpoint up.

    It runs its part of whatever run the label party starts (`feature_party_jobs`).
    """
    import time

    from splitrec_core.apart.serving import accept_runs

    jobs = feature_party_jobs(view, files)
    serving = accept_runs(view, jobs)
    print(f"{view.me}: serving {', '.join(jobs)} runs on port {serving.port}; they start when "
          f"{view.federation.label_party} starts them (Ctrl-C stops)", flush=True)
    while True:
        time.sleep(3600)
