"""How a run starts when the parties run apart: the label party invites, serving parties accept.

A feature party that serves keeps its endpoint up and runs its part of whatever run the label
party starts; the run's `Job` says which part. The Flight layer carries a job as its name.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from splitrec_core.apart.jobs import Job
from splitrec_core.apart.sessions import endpoint, expect_run
from splitrec_core.channel.flight.endpoint import FlightEndpoint
from splitrec_core.federation import PartyView
from splitrec_core.names import plain_name


def invite(view: PartyView, run_id: str, job: Job = Job.TRAIN) -> dict[str, str]:
    """The label party starts run `run_id` of `job` at every feature party that is serving.

    Returns their answers. A party that is not serving, does not serve `job` or cannot be
    reached within `connect_s` is an error naming it.
    """
    me = endpoint(view)
    expect_run(me, view, run_id)  # a feature party may reach its first stage before we do
    return {p: me.start_run(p, run_id, job.value) for p in view.config.followers}


def accept_runs(view: PartyView, jobs: Mapping[Job, Callable[[str], object]]) -> FlightEndpoint:
    """Serve: keep this party's endpoint up and run its part of the runs the label party starts.

    Whenever the label party asks for a run of a job in `jobs`, run `jobs[job](run_id)` on a
    thread of its own (once per job and run ID). Only the label party may ask.
    """
    label, started, lock = view.federation.label_party, set(), threading.Lock()

    def on_start(caller: str, name: str, run_id: str) -> str:
        if caller != label:
            raise PermissionError(f"{caller} asked {view.me} to start a run: only the label "
                                  f"party {label} starts runs")
        plain_name(run_id, f"the run ID {caller} sent")
        job = Job.named(name)
        if job is None or job not in jobs:
            why = " (its party.toml names no score_input)" if job == Job.SCORE else ""
            raise PermissionError(f"{view.me} does not serve {name} runs{why}")
        with lock:
            if (job, run_id) in started:
                return f"{view.me}: run {run_id} was started already"
            started.add((job, run_id))
        threading.Thread(target=jobs[job], args=(run_id,), name=f"splitrec-{job}-{run_id}",
                         daemon=True).start()
        return f"{view.me}: started run {run_id}"

    serving = endpoint(view)
    serving.on_start = on_start
    return serving
