"""A peer that sends what the protocol does not allow stops the run with one line naming it.

The parties are the real ones (their training jobs, their sides of PSI) on a `LocalHub`; one of
them sends through a channel that spoils one message (`Spoiled`). The receiver must refuse it
with a `ProtocolError` naming the sender and the kind, before the values reach a model or a file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from splitrec_core.channel import (
    Channel,
    Kind,
    LocalHub,
    PeerError,
    ProtocolError,
    array_table,
    table_array,
)
from splitrec_core.datasets.synthetic import write_parties
from splitrec_core.psi.ecdh import run_follower, run_leader
from splitrec_core.training.epochs import Plan
from splitrec_core.training.party import PartyJob
from tests.conftest import SYNTHETIC_TOML, prepare_features, with_training

Change = Callable[[Kind, pa.Table], tuple[Kind, pa.Table]]


@dataclass
class Spoiled:
    """A party's channel that sends `change(kind, table)` instead of its `nth` message of `kind`."""

    channel: Channel
    kind: Kind
    change: Change
    nth: int = 3
    sent: int = field(default=0, init=False)

    def __getattr__(self, name: str) -> object:
        return getattr(self.channel, name)

    def send(self, kind: Kind, to: str, table: pa.Table) -> None:
        if kind == self.kind:
            self.sent += 1
            if self.sent == self.nth:
                kind, table = self.change(kind, table)
        self.channel.send(kind, to, table)


def _values(change: Callable[[np.ndarray], np.ndarray]) -> Change:
    """Spoil the array a message carries, keeping its kind."""
    return lambda kind, table: (kind, array_table(change(table_array(table))))


def _as(kind: Kind, table: pa.Table | None = None) -> Change:
    """Send another kind (or another table) instead."""
    return lambda _, sent: (kind, sent if table is None else table)


def _with_nan(array: np.ndarray) -> np.ndarray:
    spoiled = array.copy()
    spoiled[1, 2] = np.nan
    return spoiled


def _with_inf(array: np.ndarray) -> np.ndarray:
    spoiled = array.copy()
    spoiled[0, 0] = np.inf
    return spoiled


@pytest.fixture(scope="module")
def synthetic_features(tmp_path_factory: pytest.TempPathFactory):
    """Synthetic parties, aligned and engineered once; two epochs of training at most."""
    from splitrec_core.config import load_config

    run = tmp_path_factory.mktemp("checks")
    write_parties(run / "data", 3000, seed=0)
    cfg = with_training(load_config(SYNTHETIC_TOML), epochs=2)
    return cfg, prepare_features(cfg, run)


def _train_with(cfg, features, out: Path, party: str, kind: Kind, change: Change,
                nth: int = 3) -> None:
    """Train every party on a `LocalHub`, `party` sending `change(...)` as its `nth` `kind`."""
    hub = LocalHub()
    jobs = {}
    for p in cfg.order:
        channel = hub.channel(p)
        if p == party:
            channel = Spoiled(channel, kind, change, nth)
        jobs[p] = partial(PartyJob(p, cfg, features[p], out / p), channel)
    hub.run(jobs)


CASES = {  # who spoils which kind how, who gets it, what it says (the third of the kind)
    "nan": ("media", Kind.EMBEDDING, _values(_with_nan), "advertiser",
            r"^media sent 'embedding' with 1 NaN or infinite values \(of 2048\)$"),
    "width": ("media", Kind.EMBEDDING, _values(lambda a: a[:, :4]), "advertiser",
              r"^media sent 'embedding' of shape \(256, 4\) where rows of width 8 were due$"),
    "rows": ("media", Kind.EMBEDDING, _values(lambda a: a[:-1]), "advertiser",
             r"^media sent 'embedding' of 255 rows, which ended after 255 of the 256 rows due"),
    "dtype": ("bank", Kind.EMBEDDING, _values(lambda a: a.astype(np.float64)), "advertiser",
              r"^bank sent 'embedding' of float64 where float32 was due$"),
    "kind": ("media", Kind.EMBEDDING, _as(Kind.VALIDATION_EMBEDDING), "advertiser",
             r"^media sent 'validation_embedding' where 'embedding' was due$"),
    "gradient": ("advertiser", Kind.GRADIENT, _values(_with_inf), "bank",  # (bank, media, bank)
                 r"^advertiser sent 'gradient' with 1 NaN or infinite values \(of 2048\)$"),
    "decision": ("advertiser", Kind.EARLY_STOPPING,
                 _as(Kind.EARLY_STOPPING, pa.table({"stop": [True]})), "bank",
                 r"^advertiser sent 'early_stopping' of 1 rows of \(stop: bool\) where one row "
                 r"of \(improved: bool, stop: bool\) was due$"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_spoiled_training_message_stops_the_run_naming_the_peer_and_the_kind(
        synthetic_features, tmp_path: Path, case: str):
    # Prepare: the first decision goes to bank, the first follower
    cfg, features = synthetic_features
    party, kind, change, receiver, expected = CASES[case]
    nth = 1 if kind == Kind.EARLY_STOPPING else 3

    # Execute
    with pytest.raises(ProtocolError) as raised:
        _train_with(cfg, features, tmp_path, party, kind, change, nth)

    # Assert: one line that names the peer and the kind, and nothing written from it
    assert isinstance(raised.value, PeerError)  # the command line prints it in one line
    assert "\n" not in str(raised.value)
    assert raised.match(expected)
    assert [p for p in (tmp_path / receiver).rglob("*") if p.is_file()] == []
    assert list(tmp_path.rglob("*.keras")) == []  # no party saved a model


def test_a_spoiled_message_of_a_later_epoch_leaves_only_the_checkpoints_before_it(
        synthetic_features, tmp_path: Path):
    # Prepare: spoil the first embedding message of the second epoch
    cfg, features = synthetic_features
    plan = Plan.of(cfg.training, pq.read_metadata(features["advertiser"].train).num_rows)
    per_epoch = -(-len(plan.fit) // plan.batch_size)

    # Execute
    with pytest.raises(ProtocolError, match="^media sent 'embedding' with 1 NaN"):
        _train_with(cfg, features, tmp_path, "media", Kind.EMBEDDING, _values(_with_nan),
                    nth=per_epoch + 1)

    # Assert: the first epoch was kept (at the label party, surely), nothing after it
    saved = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in saved} == {"epoch-1.npz"}
    assert any(p.is_relative_to(tmp_path / "advertiser") for p in saved)


# PSI: the real leader and followers, on IDs given in chunks

def _psi(sets: dict[str, list[str]], spoil: tuple[str, Kind, Change] | None, chunk: int = 7,
         nth: int = 2) -> dict[str, np.ndarray]:
    """Each party's rows in the common order; `spoil` = (party, kind, change) of its `nth`."""
    names, hub = list(sets), LocalHub()
    channels: dict[str, Channel] = {p: hub.channel(p) for p in names}
    if spoil is not None:
        party, kind, change = spoil
        channels[party] = Spoiled(channels[party], kind, change, nth)
    leader, *followers = names
    chunks = {p: [v[i:i + chunk] for i in range(0, len(v), chunk)] for p, v in sets.items()}
    jobs = {leader: partial(run_leader, channels[leader], chunks[leader], followers, "t", chunk,
                            len(sets[leader]))}
    for p in followers:
        jobs[p] = partial(run_follower, channels[p], chunks[p], leader, "t", chunk, len(sets[p]))
    return hub.run(jobs)


SETS = {"label": [f"id{i}" for i in range(40)], "f1": [f"id{i}" for i in range(10, 50)]}

PSI_CASES = {  # the second message of a kind is spoiled
    "width": (("f1", Kind.PSI_BLINDED, _values(lambda a: a[:, :16])),
              r"^f1 sent 'psi_blinded' of shape \(7, 16\) where rows of width 32 were due$"),
    "rows": (("label", Kind.PSI_BLINDED, _values(lambda a: np.concatenate([a, a]))),
             r"^label sent 'psi_blinded' of 14 rows, more than the 7 a message holds$"),
    "points": (("f1", Kind.PSI_DOUBLE_BLINDED, _values(lambda a: a[:0])),
               r"^f1 sent 'psi_double_blinded' for 7 points where 40 were due$"),
}


@pytest.mark.parametrize("case", list(PSI_CASES))
def test_a_spoiled_psi_message_stops_psi_naming_the_peer_and_the_kind(case: str):
    spoil, expected = PSI_CASES[case]
    with pytest.raises(ProtocolError, match=expected):
        _psi(SETS, spoil)


def test_positions_outside_what_a_follower_sent_are_refused():
    wrong = array_table(np.array([0, 99], np.int64))
    with pytest.raises(ProtocolError,
                       match=r"^label sent 'psi_positions' outside the 40 points we sent$"):
        _psi(SETS, ("label", Kind.PSI_POSITIONS, _as(Kind.PSI_POSITIONS, wrong)), nth=1)


def test_unspoiled_psi_finds_the_intersection():
    rows = _psi(SETS, None)
    assert [SETS["label"][r] for r in rows["label"]] == [SETS["f1"][r] for r in rows["f1"]]
    assert len(rows["label"]) == 30


class _Logged:
    """A channel that notes every send and receive, in order."""

    def __init__(self, channel: Channel, log: list[tuple[str, str, str]]) -> None:
        self.channel, self.log = channel, log

    def __getattr__(self, name: str) -> object:
        return getattr(self.channel, name)

    def send(self, kind: Kind, to: str, table: pa.Table) -> None:
        self.log.append(("send", kind.value, to))
        self.channel.send(kind, to, table)

    def recv(self, kind: Kind, frm: str) -> pa.Table:
        table = self.channel.recv(kind, frm)
        self.log.append(("recv", kind.value, frm))
        return table


def test_the_psi_leader_takes_every_followers_list_before_it_sends_its_own():
    # Why a bounded inbox cannot deadlock PSI: the followers send their whole lists unread, so
    # the leader must have read them all before its own list can fill their inboxes
    names = ["label", "f1", "f2"]
    sets = {p: [f"id{i}" for i in range(k, k + 30)] for k, p in enumerate(names)}
    hub, log = LocalHub(), []
    leader = _Logged(hub.channel("label"), log)
    chunks = {p: [v[i:i + 7] for i in range(0, len(v), 7)] for p, v in sets.items()}
    jobs = {"label": partial(run_leader, leader, chunks["label"], names[1:], "t", 7, 30)}
    for p in names[1:]:
        jobs[p] = partial(run_follower, hub.channel(p), chunks[p], "label", "t", 7, 30)

    hub.run(jobs)

    blinded = [(op, peer) for op, kind, peer in log if kind == Kind.PSI_BLINDED.value]
    first_send = blinded.index(("send", "f1"))
    assert blinded[:first_send] == [("recv", "f1")] * 6 + [("recv", "f2")] * 6  # 5 chunks + end
    assert {op for op, _ in blinded[first_send:]} == {"send"}


def test_bytes_pyarrow_reads_as_a_negative_length_are_the_senders_protocol_error():
    # pyarrow raises a bare OSError for these, which a stage would retry as a network failure
    from splitrec_core.channel.framing import received_table

    payload = memoryview(b"\xff\xff\xff\xff" + (-7).to_bytes(4, "little", signed=True) + bytes(16))

    with pytest.raises(ProtocolError, match=r"^bank sent 'embedding' that is not an Arrow IPC "
                                            r"stream: Invalid IPC message: negative metadata "
                                            r"length$"):
        received_table("bank", Kind.EMBEDDING, payload)
