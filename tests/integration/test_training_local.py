"""Every party in a process of its own trains exactly as on threads of one process.

The run's CPU seconds count each party's process once, with all its threads.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from splitrec_core.channel import Channel, Kind, LocalHub
from splitrec_core.channel.processes import run_in_processes
from splitrec_core.cpu import total_cpu_s
from tests.conftest import burn_on_a_thread, train_over_a_long_link, with_training

if TYPE_CHECKING:
    from splitrec_core.training.party import PartyJob, PartyOutcome


@pytest.mark.parametrize("placement", ["processes", "flight"])
def test_parties_in_processes_train_exactly_as_on_threads(trained, tmp_path, placement):
    # A process per party, over pipes or over Arrow Flight with mutual TLS on 127.0.0.1
    from splitrec_core.training.local import train_split_local

    cfg, _, _, features, split, _ = trained
    cfg = with_training(cfg, parties_in=placement)
    apart = train_split_local(cfg, features, {p: tmp_path / p for p in features})
    a = pq.read_table(apart.predictions).to_pandas()
    b = pq.read_table(split.predictions).to_pandas()
    np.testing.assert_allclose(a.drop(columns="position"), b.drop(columns="position"), atol=1e-5)
    assert (apart.epochs_run, apart.best_epoch) == (split.epochs_run, split.best_epoch)
    # every party counted what it sent (the threads' hub also carried the PSI before)
    assert apart.channel == {k: v for k, v in split.channel.items()
                             if not k.startswith(("psi", "split"))}


def test_local_updates_step_while_waiting_and_add_no_traffic(trained, tmp_path):
    # Prepare: two epochs (no early stop), over a link that holds every batch's messages
    from splitrec_core.evaluate import evaluate

    cfg, _, _, features, _, _ = trained
    cfg = with_training(cfg, epochs=2, patience=5)

    # Execute
    plain, local = (train_over_a_long_link(with_training(cfg, local_updates=on), features,
                                           {p: tmp_path / str(on) / p for p in features})
                    for on in (False, True))

    # Assert: the label party stepped locally in every epoch; not one byte or message more
    steps = json.loads(local.history.read_text())["local_steps"]
    assert all(n > 0 for n in steps), steps
    assert json.loads(plain.history.read_text())["local_steps"] == [0, 0]
    assert local.channel == plain.channel
    # and it still learns: 0.863 / 0.775 in one run here, against 0.857 / 0.885 without local
    # updates (they depend on when messages arrive, so runs differ)
    metrics = evaluate(local.predictions, features[cfg.label_party].test, cfg.task_names)
    assert all(m["auc"] > 0.65 for m in metrics.values()), metrics


class _BusyChannel:
    """A party's channel that keeps a second thread busy for `cpu_s` before each gradient.

    A feature party receives gradients only within its epochs, so all that CPU falls in the span
    its figure covers; `burnt` adds up what the thread spent.
    """

    def __init__(self, channel: Channel, cpu_s: float) -> None:
        self.channel, self.me, self.cpu_s, self.burnt = channel, channel.me, cpu_s, 0.0

    def recv(self, kind: Kind, frm: str) -> pa.Table:
        if kind is Kind.GRADIENT:
            self.burnt += burn_on_a_thread(self.cpu_s)
        return self.channel.recv(kind, frm)

    def __getattr__(self, name: str):  # send, sent, received, close: the channel's own
        return getattr(self.channel, name)


@dataclass(frozen=True)
class _Busy:
    """Party job `job` over a `_BusyChannel`; returns its outcome and the CPU burnt (picklable)."""

    job: PartyJob
    cpu_s: float

    def __call__(self, channel: Channel) -> tuple[PartyOutcome, float]:
        busy = _BusyChannel(channel, self.cpu_s)
        return self.job(busy), busy.burnt


@pytest.mark.parametrize("placement", ["threads", "processes"])
def test_cpu_per_1000_rows_is_every_party_process_with_all_its_threads(trained, tmp_path,
                                                                         placement):
    # Prepare: each feature party keeps another thread of its process busy before each gradient
    from splitrec_core.training.local import label_result
    from splitrec_core.training.party import PartyJob

    cfg, _, _, features, _, _ = trained
    cfg = with_training(cfg, epochs=2, parties_in=placement)
    jobs = {p: _Busy(PartyJob(p, cfg, features[p], tmp_path / p), cpu_s=0.03) for p in features}

    # Execute
    started = time.time()
    if placement == "threads":
        hub = LocalHub()
        ran = hub.run({p: partial(job, hub.channel(p)) for p, job in jobs.items()})
    else:
        ran = run_in_processes(jobs)
    outcomes, burnt = ({p: out[i] for p, out in ran.items()} for i in (0, 1))
    result = label_result(cfg, features[cfg.label_party].test, outcomes, started, {},
                          tmp_path / "result")

    # Assert: one process on threads, one per party otherwise
    spans = {p: outcome.cpu for p, outcome in outcomes.items()}
    processes = {span.process for span in spans.values()}
    assert len(processes) == (1 if placement == "threads" else len(features))
    # each process's clock counted the CPU its busy threads spent within the epochs
    assert all(burnt[p] > 0 for p in cfg.followers)
    for process in processes:
        inside = [p for p, span in spans.items() if span.process == process]
        assert total_cpu_s(spans[p] for p in inside) >= sum(burnt[p] for p in inside)
    # the figure is those processes' CPU seconds per 1,000 rows fitted
    label = outcomes[cfg.label_party].label
    assert label is not None
    fitted = (result.epochs_run - result.resumed_after_epoch) * label.fit_rows
    assert result.cpu_s_per_1k_rows == pytest.approx(1000 * total_cpu_s(spans.values()) / fitted)
