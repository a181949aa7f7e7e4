"""One party's pipeline when the parties run apart, each on its own host under its own Prefect.

validate → PSI → features → split training → (label party: label-only baseline, evaluate) →
export → register (label party: promote, report). It reads only this party's files; everything
else arrives over Flight.
"""

from __future__ import annotations

from prefect import Flow, flow
from prefect.runtime import flow_run

from splitrec_core.apart.jobs import Job
from splitrec_core.config import EngineConfig
from splitrec_core.federation import PartyFiles
from tasks._common import on_run_cluster, party_task_runner
from tasks.apart import (
    align_with_peers,
    invite_parties,
    refuse_a_finished_run,
    register_with_peers,
    score_with_peers,
    train_with_peers,
)
from tasks.evaluate import evaluate_run
from tasks.export import export_model
from tasks.features import build_party_features
from tasks.notify import report_failure
from tasks.report import draw_plots, publish_report
from tasks.train import train_label_only
from tasks.validate import validate_input


@flow(name="party_pipeline", log_prints=True, on_failure=[report_failure])
def party_pipeline(files: PartyFiles, *, run_id: str | None = None, invite: bool = False,
                   ) -> str | None:
    """Run the part of the party `files` names in run `run_id` (default: a new ID).

    At the label party, return `report/metrics.json`. With `invite`, the label party first
    starts the run at every feature party that serves (`splitrec party serve`).
    """
    view = files.load()
    cfg, party, root = view.config, files.party, files.workdir
    run_id = run_id or f"run-{flow_run.get_id()}"[:12]

    # 0. A finished run's ID is not run again; the label party starts the run at the others
    refuse_a_finished_run(view, run_id, root)
    if invite and party == cfg.label_party:
        invite_parties(view, run_id)

    # 1-3. Check our own input, align IDs with every party, engineer our own features (on our
    # Dask engine: the cluster our task runner started for this run)
    with on_run_cluster():
        validated = validate_input(cfg, party, view.data_file, root)
        alignment = align_with_peers(view, run_id, validated, root)
        features = build_party_features(cfg, party, validated.table, alignment.files[party], root,
                                        validated.events)

    # 4. Our part of split training; at the label party, the label-only baseline for the lift
    models, training = train_with_peers(view, run_id, features, root)
    report = None
    if training is not None:
        label_only = train_label_only(cfg, features, root)
        # 5. Evaluate every task on the test rows (only the label party holds labels)
        report = evaluate_run(cfg, features, alignment, training, label_only, root)

    # 6. Export our own part; 7. register it as version `run_id` (the label party judges it)
    exported = export_model(cfg, party, models["bottom"], features.transform, root,
                            models.get("top"))
    metrics = register_with_peers(view, run_id, exported, report, root)
    if metrics is None:
        return None

    # 8. The report for people, at the label party: report.md, tables and plots in its UI
    publish_report(cfg, metrics, draw_plots(cfg, training))
    return str(metrics)


@flow(name="party_score", log_prints=True, on_failure=[report_failure])
def party_score(files: PartyFiles, *, rows: str | None = None, run_id: str | None = None,
                model: str = "current", invite: bool = False) -> str | None:
    """Run a party's part of scoring its new `rows` (default: its `score_input`) in run `run_id`.

    The run ID is the same at every party (default: a new one); the version is the one the
    label party's `model` names. At the label party, return the predictions file. With
    `invite`, the label party first starts the run at every feature party that serves scoring.
    """
    view = files.load()
    run_id = run_id or f"score-{flow_run.get_id()}"[:14]
    if invite and files.party == view.federation.label_party:
        invite_parties(view, run_id, Job.SCORE)
    with on_run_cluster():
        scored = score_with_peers(view, run_id, model, view.rows_to_score(rows), files.workdir)
    return None if scored is None else str(scored.predictions)


def party_flows(engine: EngineConfig) -> tuple[Flow, Flow]:
    """`party_pipeline` and `party_score` on the task runner of this party's `engine`.

    On Dask, that is prefect-dask's DaskTaskRunner on the party's own cluster.
    """
    runner = party_task_runner(engine)
    return (party_pipeline.with_options(task_runner=runner),
            party_score.with_options(task_runner=runner))
