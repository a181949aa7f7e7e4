"""RR22 PSI through SecretFlow's `spu` library: pairwise, the label party receiving.

`[psi] protocol = "rr22"` replaces the ECDH exchange (`ecdh`) with RR22 (Raghuraman and Rindal,
CCS 2022: oblivious PRF from VOLE and an OKVS), as spu implements it; splitrec writes no OT or
RR22 code of its own. spu runs two parties at a time, so the label party runs one pair with each
feature party (a process each: `rr22_pair`, `rr22_worker`), always as the receiver. spu
returns, to both parties of a pair, their own rows of the pair's intersection; each side sorts
them by key, so row i is the same person at both. The label party keeps the people every pair
found, puts them in a fresh random order, and tells each feature party which of its pair rows
those are, in that order: the same `psi_positions` message, checked the same way, as under
ECDH. What follows (the split flag, the aligned files) is the same for both protocols.

What each party learns that it does not under ECDH: a feature party learns which of its IDs it
shares with the label party (its pair's intersection), not only which all parties share. With
two parties these are the same set. With three or more the federation file must accept it
(`rr22_reveal_pairwise = true`). The label party learns each pair's intersection under both
protocols (its ECDH leader matches each follower on its own). Under both, each side of a pair
learns how many IDs the other holds.

The label party names each pair's session with fresh random bytes sent over the authenticated
channel, so a process holding some other certificate of the federation's CA cannot join it.
spu's traffic does not pass through the channel: the channel counts what each worker's sockets
moved as `psi_rr22` beside its own messages (`rr22_pair`).
"""

from __future__ import annotations

import logging
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import ClassVar

import numpy as np

from splitrec_core.channel import Channel, Kind, array_table
from splitrec_core.channel.expect import Due, receive_array
from splitrec_core.config import PsiConfig
from splitrec_core.psi.positions import EmptyIntersection, receive_positions, shuffled_order
from splitrec_core.psi.rr22_links import Rr22Link
from splitrec_core.psi.rr22_pair import run_pair, scratch_folder, write_key_csv

_log = logging.getLogger(__name__)

SESSION_BYTES = 16


def positions_in(pair_rows: np.ndarray, shared: np.ndarray) -> np.ndarray:
    """For each of `shared` (rows every pair found), its index in one pair's `pair_rows`."""
    order = np.argsort(pair_rows, kind="stable")
    return order[np.searchsorted(pair_rows[order], shared)]


def run_leader(channel: Channel, ids: Path, followers: list[str], link: Rr22Link, chunk: int,
               scratch: Path) -> np.ndarray:
    """The label party's side: a pair with each feature party; its rows in the common order.

    It names each pair's session and sends the name to that party first. `scratch` is a folder
    of its own for spu's files (`scratch_folder`).
    """
    sessions = {f: secrets.token_bytes(SESSION_BYTES) for f in followers}
    for follower, session in sessions.items():
        channel.send(Kind.PSI_RR22_SESSION, follower,
                     array_table(np.frombuffer(session, np.uint8).reshape(1, -1)))
    keys_csv = write_key_csv(ids, scratch / "keys.csv", chunk)
    with ThreadPoolExecutor(max_workers=len(followers)) as pool:
        found = dict(zip(followers, pool.map(
            lambda f: run_pair(channel.me, f, sessions[f], link, keys_csv, scratch), followers),
            strict=True))
    for result in found.values():
        channel.count_beside(Kind.PSI_RR22, result.sent_bytes, result.received_bytes)
    shared = reduce(np.intersect1d, (r.rows for r in found.values()))
    shared = shared[shuffled_order(len(shared), "psi-common-order", channel.me)]
    for follower in followers:
        channel.send(Kind.PSI_POSITIONS, follower,
                     array_table(positions_in(found[follower].rows, shared)))
    _log.info("PSI (rr22): %s", ", ".join(f"{len(r.rows):,} shared with {f}"
                                          for f, r in found.items()))
    if len(shared) == 0:
        raise EmptyIntersection(f"no ID is held by all of {[channel.me, *followers]}")
    return shared


def run_follower(channel: Channel, ids: Path, leader: str, link: Rr22Link, chunk: int,
                 scratch: Path) -> np.ndarray:
    """A feature party's side: its pair with the label party; its rows in the common order.

    `scratch` is as for `run_leader`.
    """
    session = receive_array(channel, Kind.PSI_RR22_SESSION, leader,
                            Due(np.uint8, SESSION_BYTES, rows=1)).tobytes()
    keys_csv = write_key_csv(ids, scratch / "keys.csv", chunk)
    result = run_pair(channel.me, leader, session, link, keys_csv, scratch)
    channel.count_beside(Kind.PSI_RR22, result.sent_bytes, result.received_bytes)
    positions = receive_positions(channel, leader, len(result.rows))
    if len(positions) == 0:
        raise EmptyIntersection(f"no ID is held by {channel.me} and all other parties")
    return result.rows[positions]


@dataclass(frozen=True)
class Rr22:
    """RR22 PSI as one party runs it: `settings` (its `[psi]`), its pairs over `link`."""

    settings: PsiConfig
    link: Rr22Link
    name: ClassVar[str] = "rr22"

    def leader_rows(self, channel: Channel, ids: Path, followers: list[str],
                    folder: Path) -> np.ndarray:
        """The label party's rows of `ids` in the common order; spu's files go in `folder`."""
        with scratch_folder(folder) as scratch:
            return run_leader(channel, ids, followers, self.link, self.settings.chunk_size,
                              scratch)

    def follower_rows(self, channel: Channel, ids: Path, leader: str,
                      folder: Path) -> np.ndarray:
        """A feature party's rows of `ids` in the common order; spu's files go in `folder`."""
        with scratch_folder(folder) as scratch:
            return run_follower(channel, ids, leader, self.link, self.settings.chunk_size,
                                scratch)
