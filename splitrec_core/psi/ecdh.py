"""ECDH private set intersection over Curve25519: the exchange (its arithmetic: `points`).

The leader (the label party) sends
H(x)^a; each follower sends its own H(y)^b and returns H(x)^ab in the order received; the leader
computes H(y)^ba, matches, keeps what every follower shares and tells each follower which of *its*
points are in the intersection, in one common random order. Under semi-honest parties each
follower learns only the final intersection; IDs outside it stay hidden behind unknown scalars.

Points live in numpy arrays of shape (n, 32); lists cross the channel in chunks, shuffled; the
scalars are drawn fresh for every run and exist only in memory; the shuffles come from the
party's private randomness (`entropy`), never from the shared seed. The leader takes every
follower's blinded list before it sends its own, so no two parties both send a whole list
before either reads (a channel's inbox is bounded: `channel.inbox`). Every chunk received is
checked: its points' width, its rows, the rows of a whole list where the receiver knows them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow.parquet as pq

from splitrec_core.channel import Channel, Kind, ProtocolError, array_table
from splitrec_core.channel.expect import Due, receive_array
from splitrec_core.columns import ID
from splitrec_core.config import EngineConfig, PsiConfig
from splitrec_core.engine import LOCAL, party_executor
from splitrec_core.progress import Progress
from splitrec_core.psi.points import POINT_BYTES, Blinder, comparison_bytes, concat, match
from splitrec_core.psi.positions import EmptyIntersection, receive_positions, shuffled_order

_log = logging.getLogger(__name__)


def send_shuffled(channel: Channel, kind: Kind, to: str, points: np.ndarray, order: np.ndarray,
                  chunk: int) -> None:
    """Send the rows of an (n, k) array in `order`, `chunk` rows a message.

    They are gathered a chunk at a time, so a shuffled copy of all the points never exists.
    """
    send_chunks(channel, kind, to, (points[order[start : start + chunk]]
                                    for start in range(0, len(order), chunk)))


def send_chunks(channel: Channel, kind: Kind, to: str, chunks: Iterable[np.ndarray]) -> None:
    """Send (n, k) arrays one message each, then an empty one to mark the end (`recv_chunks`)."""
    width = None
    for part in chunks:
        width = part.shape[1]
        channel.send(kind, to, array_table(part))
    channel.send(kind, to, array_table(np.zeros((0, width or POINT_BYTES), np.uint8)))


def recv_chunks(channel: Channel, kind: Kind, frm: str, width: int,
                chunk: int) -> Iterator[np.ndarray]:
    """Yield the chunks of one `send_chunks` stream: (n, `width`) uint8, n at most `chunk`."""
    due = Due(np.uint8, width, max_rows=chunk)
    while True:
        part = receive_array(channel, kind, frm, due)
        if len(part) == 0:
            return
        yield part


def _drain(parts: list[np.ndarray]) -> Iterator[np.ndarray]:
    """Yield and let go of `parts` one by one, so each is freed once it has been used."""
    parts.reverse()
    while parts:
        yield parts.pop()


def _progress(party: str, total: int) -> Progress:
    return Progress(_log, f"PSI: {party}'s IDs hashed and blinded", total)


def run_leader(channel: Channel, id_chunks: Iterable[Sequence[str]], followers: Sequence[str],
               domain: str, chunk: int, total: int,
               executor: Executor | None = None) -> np.ndarray:
    """Run the leader's side; return the leader's local rows in the common order.

    `total` is how many IDs the chunks hold; `executor` is where to blind (see `Blinder`).
    """
    with Blinder(executor=executor) as blinder:
        # 1. Blind our own IDs with a fresh scalar; take every follower's blinded IDs (each sent
        #    its whole list without reading), then send ours, shuffled, to every follower
        ours = blinder.blind_ids(id_chunks, domain, total, _progress(channel.me, total))
        order = shuffled_order(total, "psi-order", channel.me)
        blinded = {f: list(recv_chunks(channel, Kind.PSI_BLINDED, f, POINT_BYTES, chunk))
                   for f in followers}
        for follower in followers:
            send_shuffled(channel, Kind.PSI_BLINDED, follower, ours, order, chunk)
        del ours  # not needed again: our points come back double-blinded

        # 2. Per follower: raise its points to our scalar and join with our double-blinded points
        matches = []  # per follower: for each of our sent points, its index in their list or -1
        for follower in followers:
            raised = [blinder.blind(c) for c in _drain(blinded.pop(follower))]
            width = comparison_bytes(total, sum(len(c) for c in raised))
            theirs = concat((c[:, :width] for c in raised), width)  # only what is compared
            del raised  # the full points: only their compared bytes are kept
            ours_twice = concat(recv_chunks(channel, Kind.PSI_DOUBLE_BLINDED, follower, width,
                                             chunk), width)
            if len(ours_twice) != total:
                raise ProtocolError(f"{follower} sent '{Kind.PSI_DOUBLE_BLINDED.value}' for "
                                    f"{len(ours_twice)} points where {total} were due")
            matches.append(match(ours_twice, theirs))
            del theirs, ours_twice

    # 3. Keep what all share, in a fresh random order; tell each follower its positions
    shared = np.flatnonzero(np.all(np.stack(matches) >= 0, axis=0))
    shared = shared[shuffled_order(len(shared), "psi-common-order", channel.me)]
    for follower, found in zip(followers, matches, strict=True):
        channel.send(Kind.PSI_POSITIONS, follower, array_table(found[shared]))
    if len(shared) == 0:
        raise EmptyIntersection(f"no ID is held by all of {[channel.me, *followers]}")
    return order[shared]


def run_follower(channel: Channel, id_chunks: Iterable[Sequence[str]], leader: str, domain: str,
                 chunk: int, total: int,
                 executor: Executor | None = None) -> np.ndarray:
    """Run a follower's side; return its local rows in the common order.

    `total` and `executor` are as for `run_leader`.
    """
    with Blinder(executor=executor) as blinder:
        # 1. Send our own blinded IDs, shuffled
        ours = blinder.blind_ids(id_chunks, domain, total, _progress(channel.me, total))
        order = shuffled_order(total, "psi-order", channel.me)
        send_shuffled(channel, Kind.PSI_BLINDED, leader, ours, order, chunk)
        del ours

        # 2. Raise the leader's points to our scalar and return them in the order and chunks
        #    received, cut to the bytes the leader compares
        theirs_twice = [blinder.blind(c) for c in recv_chunks(channel, Kind.PSI_BLINDED, leader,
                                                              POINT_BYTES, chunk)]
        width = comparison_bytes(sum(len(c) for c in theirs_twice), total)
        send_chunks(channel, Kind.PSI_DOUBLE_BLINDED, leader, (c[:, :width] for c in theirs_twice))
        del theirs_twice

    # 3. Learn which of our sent points are shared, in the common order
    positions = receive_positions(channel, leader, total)
    if len(positions) == 0:
        raise EmptyIntersection(f"no ID is held by {channel.me} and all other parties")
    return order[positions]


def id_chunks(ids: Path, chunk: int) -> Iterator[list[str]]:
    """Stream a party's validated IDs from Parquet, `chunk` at a time."""
    for batch in pq.ParquetFile(ids).iter_batches(batch_size=chunk, columns=[ID]):
        yield batch.column(0).to_pylist()


def id_count(ids: Path) -> int:
    """How many IDs a party's Parquet file holds (from its footer)."""
    return pq.ParquetFile(ids).metadata.num_rows


@dataclass(frozen=True)
class Ecdh:
    """ECDH PSI as one party runs it: `settings` (its `[psi]`), blinding on its `engine`."""

    settings: PsiConfig
    engine: EngineConfig = LOCAL
    name: ClassVar[str] = "ecdh"

    def leader_rows(self, channel: Channel, ids: Path, followers: list[str],
                    folder: Path) -> np.ndarray:
        """The label party's rows of `ids` in the common order (`folder` is not needed)."""
        chunk = self.settings.chunk_size
        with party_executor(self.engine) as executor:
            return run_leader(channel, id_chunks(ids, chunk), followers, self.settings.domain,
                              chunk, id_count(ids), executor)

    def follower_rows(self, channel: Channel, ids: Path, leader: str,
                      folder: Path) -> np.ndarray:
        """A feature party's rows of `ids` in the common order (`folder` is not needed)."""
        chunk = self.settings.chunk_size
        with party_executor(self.engine) as executor:
            return run_follower(channel, id_chunks(ids, chunk), leader, self.settings.domain,
                                chunk, id_count(ids), executor)
