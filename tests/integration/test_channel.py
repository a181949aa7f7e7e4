"""Every channel, one suite: real serialisation, per-kind accounting, no party left waiting.

The same party jobs run over the local hub (threads), process pipes and Arrow Flight with mutual
TLS on loopback (a process per party), and must give the same messages and the same counts.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from splitrec_core.channel import (
    Channel,
    ChannelStats,
    Kind,
    Limits,
    LocalHub,
    ProtocolError,
    array_table,
    table_array,
)
from splitrec_core.channel.contract import MB
from splitrec_core.channel.flight.addresses import Timeouts
from splitrec_core.channel.flight.channel import FlightChannel
from splitrec_core.channel.flight.loopback import loopback_seats
from splitrec_core.channel.framing import ipc_bytes
from splitrec_core.channel.local import ChannelAborted
from splitrec_core.channel.processes import pipe_channels, run_in_processes
from splitrec_core.errors import InputError

H = np.arange(12, dtype=np.float32).reshape(3, 4)
G = -np.arange(6, dtype=np.float32).reshape(3, 2)


@dataclass(frozen=True)
class _Counted:
    """A party job that also returns what its channel counted (picklable)."""

    job: Callable[[Channel], Any]

    def __call__(self, channel: Channel) -> tuple[Any, dict]:
        return self.job(channel), channel.sent().as_dict()


Runner = Callable[..., tuple[dict[str, Any], dict]]  # (jobs by party, limits=...)


@pytest.fixture(params=["local", "processes", "flight"])
def run_parties(request, tmp_path: Path) -> Runner:
    """Run `{party: job(channel)}` over one kind of channel; return outcomes and total traffic."""

    def local(jobs, limits=Limits()):
        hub = LocalHub(limits=limits)
        outcomes = hub.run({p: partial(job, hub.channel(p)) for p, job in jobs.items()})
        return outcomes, hub.stats().as_dict()

    def apart(jobs, channels):
        counted = run_in_processes({p: _Counted(job) for p, job in jobs.items()}, channels)
        return ({p: out for p, (out, _) in counted.items()},
                ChannelStats.merge(*(sent for _, sent in counted.values())))

    def processes(jobs, limits=Limits()):
        return apart(jobs, pipe_channels(list(jobs), limits))

    def flight(jobs, limits=Limits()):
        seats = loopback_seats(list(jobs), tmp_path / "credentials", "test",
                               Timeouts(connect_s=30, recv_s=30), limits)
        return apart(jobs, seats)

    return {"local": local, "processes": processes, "flight": flight}[request.param]


# Party jobs (top level, so a party process can unpickle them)

def _sender(channel: Channel) -> None:
    channel.send(Kind.EMBEDDING, "b", array_table(H))
    channel.send(Kind.EMBEDDING, "b", array_table(H[:1]))
    channel.send(Kind.GRADIENT, "b", array_table(G))
    assert channel.recv(Kind.EARLY_STOPPING, "b").to_pylist() == [{"stop": True}]


def _receiver(channel: Channel) -> list[np.ndarray]:
    got = [table_array(channel.recv(Kind.EMBEDDING, "a")) for _ in range(2)]
    got += [table_array(channel.recv(Kind.GRADIENT, "a"))]
    channel.send(Kind.EARLY_STOPPING, "a", pa.table({"stop": [True]}))
    return got


def _out_of_order_receiver(channel: Channel) -> None:
    channel.recv(Kind.GRADIENT, "a")  # sent last: the first message is an embedding


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


def _asks_then_polls(channel: Channel) -> tuple[bool, float]:
    nothing_yet = channel.ready("a")
    channel.send(Kind.SPLIT_MASK, "a", array_table(np.array([1.0])))  # now a sends
    deadline = time.monotonic() + 30
    while not channel.ready("a") and time.monotonic() < deadline:
        time.sleep(0.002)
    assert channel.ready("a"), "asking took the message"
    return nothing_yet, float(table_array(channel.recv(Kind.EMBEDDING, "a"))[0])


def _answers_when_asked(channel: Channel) -> None:
    channel.recv(Kind.SPLIT_MASK, "b")
    channel.send(Kind.EMBEDDING, "b", array_table(np.array([3.0])))


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


BIG = np.zeros((2 * MB // 4, 1), np.float32)  # 2 MiB of values: over a 1 MiB maximum


def _sends_big(channel: Channel) -> None:
    channel.send(Kind.EMBEDDING, "b", array_table(BIG))


def _takes_an_embedding(channel: Channel) -> None:
    channel.recv(Kind.EMBEDDING, "a")


def _sends_big_then_takes(channel: Channel) -> float:
    """Send the peer 8 MiB, then take the 8 MiB it sent at the same time: their sum."""
    mine, theirs = ((Kind.EMBEDDING, Kind.GRADIENT) if channel.me == "a"
                    else (Kind.GRADIENT, Kind.EMBEDDING))
    peer = "b" if channel.me == "a" else "a"
    channel.send(mine, peer, array_table(np.ones((2 * MB, 1), np.float32)))
    return float(table_array(channel.recv(theirs, peer)).sum())


@pytest.mark.timeout(300)
def test_two_parties_sending_each_other_more_than_a_socket_holds_at_once_both_get_through(
        run_parties: Runner):
    # A feature party embedding ahead sends while the label party returns gradients; with no
    # reader but the party itself, two pipes' socket buffers (a few hundred KiB) filled both
    # ways and both parties waited for ever (parties_in = "processes" with embed_ahead = 1)
    outcomes, traffic = run_parties({"a": _sends_big_then_takes, "b": _sends_big_then_takes})

    assert outcomes == {"a": 2 * MB, "b": 2 * MB}
    assert traffic["embedding"]["messages"] == traffic["gradient"]["messages"] == 1


def test_messages_arrive_whole_and_in_order_and_are_counted(run_parties: Runner):
    # Execute
    outcomes, traffic = run_parties({"a": _sender, "b": _receiver})

    # Assert: in the order sent
    first, second, gradient = outcomes["b"]
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
                                     "b": partial(_counts_after, _receiver)})

    # Assert: what one party sent, the other received, on every channel
    (a_sent, a_received), (b_sent, b_received) = outcomes["a"], outcomes["b"]
    assert sorted(a_sent) == ["embedding", "gradient"]
    assert sorted(b_sent) == ["early_stopping"]
    assert (a_received, b_received) == (b_sent, a_sent)
    assert ChannelStats.merge(a_sent, b_sent) == traffic


def test_ready_says_whether_a_message_waits_without_taking_it(run_parties: Runner):
    # What local updates ask before each step: is the peer's message here yet?
    outcomes, _ = run_parties({"a": _answers_when_asked, "b": _asks_then_polls})
    assert outcomes["b"] == (False, 3.0)


def test_three_parties_route_by_sender(run_parties: Runner):
    outcomes, traffic = run_parties({"hub": _hub, "f1": _spoke, "f2": _spoke})

    assert outcomes == {"hub": [20.0, 10.0], "f1": 2.0, "f2": 1.0}
    assert {kind: counts["messages"] for kind, counts in traffic.items()} == {
        "embedding": 2, "gradient": 2, "split_mask": 2}


@pytest.mark.timeout(120)
def test_a_message_of_another_kind_than_the_one_due_is_refused_naming_both(run_parties: Runner):
    # Every protocol takes a peer's messages in the order sent, so another kind is a peer's fault
    with pytest.raises(ProtocolError, match="^party b failed: ProtocolError: a sent 'embedding' "
                                            "where 'gradient' was due$|^a sent 'embedding' where "
                                            "'gradient' was due$"):
        run_parties({"a": _sender, "b": _out_of_order_receiver})


@pytest.mark.timeout(120)
def test_a_party_refuses_to_send_a_message_over_the_maximum_size(run_parties: Runner):
    # Every party has the same maximum, so the sender stops before its peer would refuse it
    with pytest.raises((InputError, RuntimeError), match=r"\[channel\] max_message_mb.*a "
                       r"'embedding' message to b of 2\.0 MB is over the maximum message size "
                       r"of 1 MB \(raise it at every party\)"):
        run_parties({"a": _sends_big, "b": _takes_an_embedding},
                    limits=Limits(max_message_bytes=MB))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", ["processes", "flight"])
def test_a_message_over_the_receivers_maximum_size_is_refused_naming_peer_and_kind(
        transport: str, tmp_path: Path):
    # Prepare: a sender that allows itself more than the receiver accepts
    names, small, large = ["a", "b"], Limits(max_message_bytes=MB), Limits(64 * MB)
    if transport == "processes":
        openers = pipe_channels(names, small)
        channels = {"a": partial(openers["a"].func, *openers["a"].args[:2], large),
                    "b": openers["b"]}
    else:
        seats = loopback_seats(names, tmp_path, "test", Timeouts(connect_s=30, recv_s=30), small)
        channels = {"a": dataclasses.replace(seats["a"], limits=large), "b": seats["b"]}

    # Execute, Assert: one line naming the sender and the kind
    with pytest.raises(ProtocolError) as raised:
        run_in_processes({"a": _sends_big, "b": _takes_an_embedding}, channels)
    assert "\n" not in str(raised.value)
    assert raised.match(r"^party b failed: ProtocolError: a sent a( 'embedding')? message (of "
                        r"2\.0 MB, )?over the maximum message size of 1 MB")
    assert "'embedding'" in str(raised.value)


def _send_counted(channel: FlightChannel, payloads: list[np.ndarray], sent: list[int]) -> None:
    for payload in payloads:
        channel.send(Kind.EMBEDDING, "b", array_table(payload))
        sent.append(len(sent))


def _open_both(seats: dict) -> dict[str, FlightChannel]:
    """Open a's and b's Flight channels in this process (each waits for the other)."""
    opened: dict[str, FlightChannel] = {}
    openers = [threading.Thread(target=lambda p=p: opened.update({p: seats[p]()}))
               for p in ("a", "b")]
    for opener in openers:
        opener.start()
    for opener in openers:
        opener.join(60)
    return opened


@pytest.mark.timeout(300)
def test_a_receiver_that_does_not_read_blocks_its_sender_and_holds_at_most_its_bound(
        tmp_path: Path):
    # Prepare: a and b in this process over Flight, b's inbox bounded to 1 MiB; a sends 64 MiB
    # in messages of 256 KiB, far beyond what the bound and the transport's buffers hold
    limits = Limits(inbox_bytes=MB)
    seats = loopback_seats(["a", "b"], tmp_path, "test", Timeouts(connect_s=30, recv_s=120),
                           limits)
    opened = _open_both(seats)
    payloads = [np.full((MB // 16, 1), i, np.float32) for i in range(256)]
    sent: list[int] = []
    sender = threading.Thread(target=_send_counted, args=(opened["a"], payloads, sent),
                              daemon=True)

    try:
        # Execute: b reads nothing for a while, then everything
        sender.start()
        sender.join(5)
        blocked, sent_while_blocked = sender.is_alive(), len(sent)
        held_while_blocked = opened["b"].inbox_peaks()["a"]
        got = [table_array(opened["b"].recv(Kind.EMBEDDING, "a"))[0, 0] for _ in payloads]
        sender.join(60)
    finally:
        for channel in opened.values():
            channel.close()

    # Assert: a waited with most of its messages unsent; b never held more than its bound
    assert blocked and sent_while_blocked < len(payloads) // 2
    assert 0 < held_while_blocked <= MB
    assert opened["b"].inbox_peaks()["a"] <= MB
    assert got == list(range(256)) and len(sent) == 256


@pytest.mark.timeout(300)
def test_a_party_that_closes_with_messages_untaken_releases_its_blocked_sender_at_once(
        tmp_path: Path):
    # Prepare: a and b over Flight, a's inbox bounded to 1 MiB (b dialed a, so a's link is the
    # one a's endpoint accepted); b sends more than the bound and a takes none of it
    limits = Limits(inbox_bytes=MB)
    seats = loopback_seats(["a", "b"], tmp_path, "test", Timeouts(connect_s=300, recv_s=300),
                           limits)
    opened = _open_both(seats)
    failures: list[BaseException] = []

    def send_until_refused() -> None:
        try:
            for i in range(256):
                opened["b"].send(Kind.EMBEDDING, "a", array_table(np.full((MB // 16, 1), i,
                                                                          np.float32)))
        except BaseException as error:  # asserted below
            failures.append(error)

    sender = threading.Thread(target=send_until_refused, daemon=True)
    sender.start()
    sender.join(5)
    blocked = sender.is_alive()

    # Execute: a ends its session without taking anything
    try:
        opened["a"].close()
        sender.join(60)
    finally:
        opened["b"].close()

    # Assert: b was blocked, and a's close released it with an error naming a (before, it waited
    # for the inbox's patience or the transport's timeouts, here minutes)
    assert blocked and not sender.is_alive()
    assert [str(f) for f in failures] == ["a ended the session"]


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
