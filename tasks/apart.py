"""Prefect tasks for a party running apart, over Flight.

Its side of PSI, split training, registering and scoring.

Their cache keys include the run ID that every party of the run shares: within a run a stage is
cached (a retried flow run skips what finished), and a new run ID runs every stage afresh at
every party. A party whose inputs changed under the same run ID would run a stage its peers have
cached, and wait for them until `connect_s`: every run gets a new ID.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from splitrec_core.apart.jobs import Job
from splitrec_core.features import PartyFeatures
from splitrec_core.federation import PartyView
from splitrec_core.psi import Alignment
from splitrec_core.report import Report
from splitrec_core.results import TrainResult
from splitrec_core.scoring import Scored
from splitrec_core.validate import ValidatedParty
from splitrec_core.workspace import Workspace
from tasks._common import BACKOFF, JITTER, RETRIES, retry_unless_bad_input
from tasks._policies import content_policy
from tasks._progress import epoch_progress
from tasks.registry import record_verdict


@task(name="check_run_id", task_run_name="check_run_id-{run_id}",
      retries=RETRIES, retry_delay_seconds=BACKOFF, retry_jitter_factor=JITTER,
      retry_condition_fn=retry_unless_bad_input,
      cache_policy=NO_CACHE, persist_result=False)
def refuse_a_finished_run(view: PartyView, run_id: str, workdir: Path) -> None:
    """Stop before any work if run `run_id` already ran to its end here (a new run needs a new ID).

    Bad input: it is not retried.
    """
    from splitrec_core.apart.registry_protocol import refuse_a_finished_run as refuse

    refuse(view, run_id, Workspace(workdir))


@task(name="psi_align", task_run_name="psi_align-{run_id}",
      retries=RETRIES, retry_delay_seconds=BACKOFF, retry_jitter_factor=JITTER,
      retry_condition_fn=retry_unless_bad_input,
      cache_policy=content_policy(), persist_result=True)
def align_with_peers(view: PartyView, run_id: str, validated: ValidatedParty,
                     workdir: Path) -> Alignment:
    """This party's side of ECDH PSI with the federation's other parties."""
    from splitrec_core.apart.psi import align_apart

    return align_apart(view, run_id, validated, Workspace(workdir))


@task(name="train_split_mmoe", task_run_name="train_split_mmoe-{run_id}",
      retries=RETRIES, retry_delay_seconds=BACKOFF, retry_jitter_factor=JITTER,
      retry_condition_fn=retry_unless_bad_input,
      cache_policy=content_policy(), persist_result=True)
def train_with_peers(view: PartyView, run_id: str, features: PartyFeatures,
                     workdir: Path) -> tuple[dict[str, Path], TrainResult | None]:
    """This party's part of split training; a retry resumes from the last common epoch.

    At the label party, the run's page shows a progress artifact, updated every epoch.
    """
    from splitrec_core.apart.training import train_apart

    if view.me != view.federation.label_party:
        return train_apart(view, run_id, features, Workspace(workdir))
    with epoch_progress(view.config) as progress:
        models, result = train_apart(view, run_id, features, Workspace(workdir))
    assert result is not None  # the label party's part returns the run's result
    progress.done(result)
    return models, result


@task(name="start_run", task_run_name="start_{job}_run-{run_id}",
      retries=RETRIES, retry_delay_seconds=BACKOFF, retry_jitter_factor=JITTER,
      retry_condition_fn=retry_unless_bad_input,
      cache_policy=content_policy(), persist_result=True)
def invite_parties(view: PartyView, run_id: str, job: Job = Job.TRAIN) -> dict[str, str]:
    """The label party asks every serving feature party to start its part of a run.

    The run is run `run_id` of `job` (train, score).
    """
    from splitrec_core.apart.serving import invite

    return invite(view, run_id, job)


@task(name="register", task_run_name="register-{run_id}",
      retries=RETRIES, retry_delay_seconds=BACKOFF, retry_jitter_factor=JITTER,
      retry_condition_fn=retry_unless_bad_input,
      cache_policy=NO_CACHE, persist_result=False)
def register_with_peers(view: PartyView, run_id: str, export: Path, report: Report | None,
                        workdir: Path) -> Path | None:
    """Register our part of the run's model as version `run_id`.

    At the label party, judge it and return `report/metrics.json` with the verdict. Every party
    always runs it (never cached), so no party waits for one that skipped it.
    """
    from splitrec_core.apart.registry_protocol import register_apart

    verdict = register_apart(view, run_id, export, report, Workspace(workdir))
    return None if report is None else record_verdict(report, verdict, workdir)


@task(name="score", task_run_name="score-{run_id}",
      retries=RETRIES, retry_delay_seconds=BACKOFF, retry_jitter_factor=JITTER,
      retry_condition_fn=retry_unless_bad_input,
      cache_policy=content_policy(), persist_result=True)
def score_with_peers(view: PartyView, run_id: str, model: str, rows: Path,
                     workdir: Path) -> Scored | None:
    """Our part of scoring `rows` with the version the label party names (`model`).

    The predictions come back at the label party only.
    """
    from splitrec_core.apart.scoring import score_apart

    return score_apart(view, run_id, model, rows, Workspace(workdir))
