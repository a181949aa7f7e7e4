"""Every channel, one suite: real serialisation, per-kind accounting, no party left waiting.

The same party jobs run over the local hub (threads), process pipes and Arrow Flight with mutual
TLS on loopback (a process per party), and must give the same messages and the same counts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from splitrec_core.channel import Channel, ChannelStats, Kind, LocalHub, array_table, table_array
from splitrec_core.channel.base import ipc_bytes
from splitrec_core.channel.flight.addresses import Timeouts
from splitrec_core.channel.flight.loopback import loopback_seats
from splitrec_core.channel.local import ChannelAborted
from splitrec_core.channel.processes import run_in_processes

H = np.arange(12, dtype=np.float32).reshape(3, 4)
G = -np.arange(6, dtype=np.float32).reshape(3, 2)


@dataclass(frozen=True)
class _Counted:
    """A party job that also returns what its channel counted (picklable)."""

    job: Callable[[Channel], Any]

    def __call__(self, channel: Channel) -> tuple[Any, dict]:
        return self.job(channel), channel.sent().as_dict()


Runner = Callable[[dict[str, Callable[[Channel], Any]]], tuple[dict[str, Any], dict]]


@pytest.fixture(params=["local", "processes", "flight"])
def run_parties(request, tmp_path: Path) -> Runner:
    """Run `{party: job(channel)}` over one kind of channel; return outcomes and total traffic."""

    def local(jobs):
        hub = LocalHub()
        outcomes = hub.run({p: partial(job, hub.channel(p)) for p, job in jobs.items()})
        return outcomes, hub.stats().as_dict()

    def apart(jobs, channels=None):
        counted = run_in_processes({p: _Counted(job) for p, job in jobs.items()}, channels)
        return ({p: out for p, (out, _) in counted.items()},
                ChannelStats.merge(*(sent for _, sent in counted.values())))

    def flight(jobs):
        seats = loopback_seats(list(jobs), tmp_path / "credentials", "test",
                               Timeouts(connect_s=30, recv_s=30))
        return apart(jobs, seats)

    return {"local": local, "processes": apart, "flight": flight}[request.param]


# Party jobs (top level, so a party process can unpickle them)

def _sender(channel: Channel) -> None:
    channel.send(Kind.EMBEDDING, "b", array_table(H))
    channel.send(Kind.EMBEDDING, "b", array_table(H[:1]))
    channel.send(Kind.GRADIENT, "b", array_table(G))
    assert channel.recv(Kind.EARLY_STOPPING, "b").to_pylist() == [{"stop": True}]


def _out_of_order_receiver(channel: Channel) -> list[np.ndarray]:
    got = [table_array(channel.recv(Kind.GRADIENT, "a"))]  # sent last, taken first
    got += [table_array(channel.recv(Kind.EMBEDDING, "a")) for _ in range(2)]
    channel.send(Kind.EARLY_STOPPING, "a", pa.table({"stop": [True]}))
    return got


def _hub(channel: Channel) -> list[float]:
    channel.send(Kind.SPLIT_MASK, "f1", array_table(np.array([1.0])))
    channel.send(Kind.SPLIT_MASK, "f2", array_table(np.array([2.0])))
    return [float(table_array(channel.recv(Kind.EMBEDDING, f))[0]) for f in ("f2", "f1")]


def _spoke(channel: Channel) -> float:
    mine = float(table_array(channel.recv(Kind.SPLIT_MASK, "hub"))[0])
    channel.send(Kind.EMBEDDING, "hub", array_table(np.array([10 * mine])))
    other = "f2" if channel.me == "f1" else "f1"
    channel.send(Kind.GRADIENT, other, array_table(np.array([mine])))
    return float(table_array(channel.recv(Kind.GRADIENT, other))[0])


def _counts_after(job: Callable[[Channel], Any], channel: Channel) -> tuple[dict, dict]:
    job(channel)
    return channel.sent().as_dict(), channel.received().as_dict()


def _sends_raw_features(channel: Channel) -> None:
    channel.send("raw_features", "b", pa.table({"x": [1]}))  # type: ignore[arg-type]


def _crashes(channel: Channel) -> None:
    time.sleep(0.2)
    raise RuntimeError("party a crashed")


def _waits_forever(channel: Channel) -> None:
    channel.recv(Kind.GRADIENT, "a")


def test_messages_arrive_whole_and_in_order_per_kind_and_are_counted(run_parties: Runner):
    # Execute
    outcomes, traffic = run_parties({"a": _sender, "b": _out_of_order_receiver})

    # Assert: each kind in its own order, however the kinds interleave
    gradient, first, second = outcomes["b"]
    np.testing.assert_array_equal(gradient, G)
    np.testing.assert_array_equal(first, H)
    np.testing.assert_array_equal(second, H[:1])
    # the bytes are the Arrow IPC streams, the same on every channel
    def size(array: np.ndarray) -> int:
        return ipc_bytes(array_table(array)).size

    stop = ipc_bytes(pa.table({"stop": [True]})).size
    assert traffic == {"early_stopping": {"bytes": stop, "messages": 1},
                       "embedding": {"bytes": size(H) + size(H[:1]), "messages": 2},
                       "gradient": {"bytes": size(G), "messages": 1}}


def test_each_party_counts_what_it_sent_and_what_it_received(run_parties: Runner):
    # Execute
    outcomes, traffic = run_parties({"a": partial(_counts_after, _sender),
                                     "b": partial(_counts_after, _out_of_order_receiver)})

    # Assert: what one party sent, the other received, on every channel
    (a_sent, a_received), (b_sent, b_received) = outcomes["a"], outcomes["b"]
    assert sorted(a_sent) == ["embedding", "gradient"]
    assert sorted(b_sent) == ["early_stopping"]
    assert (a_received, b_received) == (b_sent, a_sent)
    assert ChannelStats.merge(a_sent, b_sent) == traffic


def test_three_parties_route_by_sender(run_parties: Runner):
    outcomes, traffic = run_parties({"hub": _hub, "f1": _spoke, "f2": _spoke})

    assert outcomes == {"hub": [20.0, 10.0], "f1": 2.0, "f2": 1.0}
    assert {kind: counts["messages"] for kind, counts in traffic.items()} == {
        "embedding": 2, "gradient": 2, "split_mask": 2}


def test_unknown_kind_is_refused(run_parties: Runner):
    with pytest.raises((ValueError, RuntimeError), match="unknown message kind 'raw_features'"):
        run_parties({"a": _sends_raw_features, "b": _waits_forever})


@pytest.mark.timeout(120)  # a hang guard: b waits forever unless a's failure releases it
def test_a_failed_party_releases_the_others(run_parties: Runner):
    with pytest.raises(RuntimeError, match="party a crashed"):
        run_parties({"a": _crashes, "b": _waits_forever})


def test_a_local_hub_refuses_every_wait_after_a_failure():
    hub = LocalHub()
    with pytest.raises(RuntimeError, match="party a crashed"):
        hub.run({"a": partial(_crashes, hub.channel("a")), "b": partial(_waits_forever,
                                                                         hub.channel("b"))})
    with pytest.raises(ChannelAborted):
        hub.channel("c").recv(Kind.GRADIENT, "a")


def test_stats_merge():
    merged = ChannelStats.merge({"gradient": {"bytes": 10, "messages": 1}},
                                {"gradient": {"bytes": 5, "messages": 2},
                                 "embedding": {"bytes": 1, "messages": 1}})
    assert merged == {"embedding": {"bytes": 1, "messages": 1},
                      "gradient": {"bytes": 15, "messages": 3}}


def _logs_an_epoch(party: str, channel: Channel) -> None:
    logging.getLogger("splitrec_core.training").info("%s: epoch 1 done", party,
                                                     extra={"epoch": 1, "epochs": 3})


def test_what_a_party_logs_reaches_this_process_loggers(run_parties, caplog):
    caplog.set_level(logging.INFO, logger="splitrec_core")

    run_parties({p: partial(_logs_an_epoch, p) for p in ("a", "b")})

    got = sorted((r.name, r.getMessage(), r.epoch) for r in caplog.records if hasattr(r, "epoch"))
    assert got == [("splitrec_core.training", "a: epoch 1 done", 1),
                   ("splitrec_core.training", "b: epoch 1 done", 1)]
