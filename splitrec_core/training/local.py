"""Every party's part of split training on this machine.

The parties run on threads of this process over a `LocalHub`, in a process each over pipes, or
in a process each over Arrow Flight with mutual TLS on 127.0.0.1 (as parties apart talk). The
same `PartyJob` runs in every mode.
"""

from __future__ import annotations

import tempfile
import time
from functools import partial
from pathlib import Path

from splitrec_core.channel import ChannelStats, Limits, LocalHub
from splitrec_core.channel.flight.loopback import loopback_seats
from splitrec_core.channel.processes import own_cores, pipe_channels, run_in_processes
from splitrec_core.config import Config
from splitrec_core.cpu import total_cpu_s
from splitrec_core.features import PartyFeatures
from splitrec_core.results import TrainResult
from splitrec_core.training.models import party_order
from splitrec_core.training.party import PartyJob, PartyOutcome
from splitrec_core.training.runs import TrainedRun, write_result


def _run_jobs(cfg: Config, jobs: dict[str, PartyJob], hub: LocalHub | None,
              ) -> tuple[dict[str, PartyOutcome], dict[str, dict[str, int]]]:
    """Run the jobs as `training.parties_in` says; their outcomes and the traffic of all."""
    placement, limits = cfg.training.parties_in, Limits.in_mb(**cfg.channel.model_dump())
    if placement != "threads" and hub is not None:
        raise ValueError("a LocalHub carries parties on threads, not in processes")
    if placement == "threads":
        hub = hub or LocalHub(limits=limits)
        outcomes = hub.run({p: partial(job, hub.channel(p)) for p, job in jobs.items()})
        return outcomes, hub.stats().as_dict()
    order = party_order(cfg, jobs)
    cores = own_cores(order) if cfg.training.own_cores else None
    if placement == "flight":
        with tempfile.TemporaryDirectory(prefix="splitrec-credentials-") as folder:
            seats = loopback_seats(order, Path(folder), session="train", limits=limits)
            outcomes = run_in_processes(jobs, seats, cores)
    else:
        outcomes = run_in_processes(jobs, pipe_channels(order, limits), cores)
    return outcomes, ChannelStats.merge(*(o.sent for o in outcomes.values()))


def train_split_local(cfg: Config, features: dict[str, PartyFeatures], out_dirs: dict[str, Path],
                      hub: LocalHub | None = None) -> TrainResult:
    """Train the split MMoE with every party on this machine.

    The parties run as `training.parties_in` says (on threads over `hub`, if given).
    `features[party]` names that party's train, test and transform files; each party's model
    is written to `out_dirs[party]`, and the label party's test predictions beside its model.
    A run killed part-way resumes from the last epoch every party checkpointed.
    """
    jobs = {p: PartyJob(p, cfg, features[p], out_dirs[p]) for p in party_order(cfg, features)}
    started = time.time()
    outcomes, channel = _run_jobs(cfg, jobs, hub)
    return label_result(cfg, features[cfg.label_party].test, outcomes, started, channel,
                        out_dirs[cfg.label_party])


def label_result(cfg: Config, label_test: Path, outcomes: dict[str, PartyOutcome], started: float,
                 channel: dict[str, dict[str, int]], out_dir: Path) -> TrainResult:
    """The run's result from the parties' outcomes (the label party's among them).

    That is its test predictions and history written to `out_dir`, the models, the timings and
    the traffic. Its CPU seconds are those of the processes the outcomes came from: every
    party's on one machine; the label party's own when the parties run apart, since no party's
    CPU time crosses the channel.
    """
    label = outcomes[cfg.label_party]
    trained = label.label
    assert trained is not None  # the label party's job always returns its outcome
    ready = max(o.ready_at for o in outcomes.values())
    models = {p: o.models["bottom"] for p, o in outcomes.items()} | {"top": label.models["top"]}
    run = TrainedRun(trained.history, trained.probabilities, trained.fit_rows,
                     startup_s=ready - started, train_s=trained.trained_at - ready,
                     cpu_s=total_cpu_s(o.cpu for o in outcomes.values()), models=models,
                     channel=channel, leakage=trained.leakage,
                     activity_auc=trained.activity_auc,
                     resumed_after_epoch=label.resumed_after_epoch)
    return write_result(cfg, run, label_test=label_test, out_dir=out_dir)
