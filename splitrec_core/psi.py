"""ECDH private set intersection over Curve25519 (X25519 from libsodium, through PyNaCl).

Each party maps an ID to an X25519 u-coordinate with SHA-256 over a per-run domain string and
"raises" it to a secret scalar with `crypto_scalarmult`. X25519 clamps scalars, which clears the
cofactor, so blinding commutes: X(b, X(a, u)) == X(a, X(b, u)). The leader (the label party) sends
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

import hashlib
import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import partial

import numpy as np
from nacl.bindings import crypto_scalarmult
from nacl.utils import random as random_bytes

from splitrec_core.channel import Channel, Kind, ProtocolError, array_table
from splitrec_core.channel.expect import Due, receive_array
from splitrec_core.engine import in_order
from splitrec_core.entropy import private_generator
from splitrec_core.progress import Progress

_log = logging.getLogger(__name__)

POINT_BYTES = 32
#: Bound on the chance that two different IDs compare equal anywhere in a run: 2^-40.
COLLISION_BITS = 40


class EmptyIntersection(ValueError):
    """No ID is held by every party; raised at every party so none waits forever."""


def hash_to_points(ids: Sequence[str], domain: str) -> np.ndarray:
    """Map each ID to a 32-byte X25519 u-coordinate, separated per run by `domain`.

    Returns (n, 32) uint8.
    """
    prefix = hashlib.sha256(domain.encode("utf-8")).digest()
    digests = b"".join(hashlib.sha256(prefix + i.encode("utf-8")).digest() for i in ids)
    return np.frombuffer(digests, np.uint8).reshape(-1, POINT_BYTES)


def _blind_block(points: np.ndarray, scalar: bytes) -> np.ndarray:
    data = points.tobytes()
    out = b"".join(crypto_scalarmult(scalar, data[i : i + POINT_BYTES])
                   for i in range(0, len(data), POINT_BYTES))
    return np.frombuffer(out, np.uint8).reshape(-1, POINT_BYTES)


class Blinder:
    """Raises points to one secret scalar, a block of points per task on an executor.

    By default the executor is a thread pool over this machine's cores: libsodium releases the
    GIL inside `crypto_scalarmult`, so threads scale with the cores without copying points into
    other processes. A party whose IDs outgrow one machine passes the `concurrent.futures` face
    of its own Dask cluster (`distributed.Client.get_executor()`): its workers then hold the
    scalar in memory while they blind, and a block lost with a worker is blinded again on
    another. The scalar is drawn here, fresh, and splitrec never writes it anywhere.
    """

    def __init__(self, block: int = 4096, workers: int | None = None,
                 executor: Executor | None = None) -> None:
        self._scalar = random_bytes(32)
        self.block = block
        self._owns_pool = executor is None
        self._pool = executor or ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1)

    def __enter__(self) -> Blinder:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._owns_pool:
            self._pool.shutdown()

    def blind(self, points: np.ndarray) -> np.ndarray:
        """Return `points` raised to the scalar, row for row."""
        blocks = [points[i : i + self.block] for i in range(0, len(points), self.block)]
        done = list(self._pool.map(partial(_blind_block, scalar=self._scalar), blocks))
        return np.concatenate(done) if done else np.zeros((0, POINT_BYTES), np.uint8)

    def blind_ids(self, id_chunks: Iterable[Sequence[str]], domain: str, total: int,
                  progress: Progress | None = None) -> np.ndarray:
        """Hash and blind the `total` IDs that arrive in chunks (a stream from Parquet).

        Returns (total, 32), filled in place, so the points are held once, not once more in
        pieces.

        On the blinder's own threads, each chunk is hashed here (SHA-256 of short IDs holds the
        GIL) and its points blinded block by block on the threads. On a party's cluster, each
        chunk is hashed and blinded by a worker (`engine.in_order`), so memory is bounded by the
        chunk size.
        """
        if self._owns_pool:
            done: Iterator[tuple[Sequence[str], np.ndarray]] = (
                (chunk, self.blind(hash_to_points(chunk, domain))) for chunk in id_chunks)
        else:
            done = in_order(self._pool, partial(_hash_and_blind, domain=domain,
                                                scalar=self._scalar), id_chunks)
        blinded, filled = np.empty((total, POINT_BYTES), np.uint8), 0
        for chunk, points in done:
            if filled + len(points) > total:
                raise ValueError(f"the ID chunks hold more than the {total} IDs announced")
            blinded[filled : filled + len(points)] = points
            filled += len(points)
            if progress:
                progress.add(len(chunk))
        if filled != total:
            raise ValueError(f"the ID chunks hold {filled} IDs, not the {total} announced")
        if progress:
            progress.finish()
        return blinded


def _hash_and_blind(ids: Sequence[str], domain: str, scalar: bytes) -> np.ndarray:
    return _blind_block(hash_to_points(ids, domain), scalar)


def _concat(parts: Iterable[np.ndarray], width: int) -> np.ndarray:
    arrays = list(parts)
    return np.concatenate(arrays) if arrays else np.zeros((0, width), np.uint8)


def comparison_bytes(n_leader: int, n_follower: int) -> int:
    """How many leading bytes of a double-blinded point the parties compare.

    Double-blinded points are uniform, so the chance that any of the n_leader * n_follower pairs
    of different IDs agrees on the first k bytes is at most n_leader * n_follower / 2^(8k). We take
    the smallest k (at least 8, at most 32) that keeps it below 2^-40: 10 bytes for 1M x 1M.
    """
    pairs = max(1, n_leader) * max(1, n_follower)
    return min(POINT_BYTES, max(8, math.ceil((math.log2(pairs) + COLLISION_BITS) / 8)))


def match(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """For each row of `ours`, the index of the equal row of `theirs`, or -1 (rows are unique).

    Both are (n, k) uint8 with k >= 8; a sort on the first 8 bytes and a binary search do the join.
    """
    result = np.full(len(ours), -1, np.int64)
    if len(ours) == 0 or len(theirs) == 0:
        return result
    key_theirs = np.ascontiguousarray(theirs[:, :8]).view("<u8").ravel()
    order = np.argsort(key_theirs, kind="stable")
    sorted_keys = key_theirs[order]
    del key_theirs  # each temporary here is 8 bytes a point: none is kept longer than needed
    if np.any(sorted_keys[1:] == sorted_keys[:-1]):  # 8-byte prefixes collide: join on all bytes
        where = {row.tobytes(): j for j, row in enumerate(theirs)}
        return np.array([where.get(row.tobytes(), -1) for row in ours], np.int64)
    key_ours = np.ascontiguousarray(ours[:, :8]).view("<u8").ravel()
    slot = np.minimum(np.searchsorted(sorted_keys, key_ours), len(sorted_keys) - 1)
    prefix_equal = np.flatnonzero(sorted_keys[slot] == key_ours)
    del key_ours, sorted_keys
    candidate = order[slot[prefix_equal]]
    whole_equal = np.all(ours[prefix_equal] == theirs[candidate], axis=1)
    result[prefix_equal[whole_equal]] = candidate[whole_equal]
    return result


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


def shuffled_order(n: int, *purpose: str) -> np.ndarray:
    """A private random order of `n` items (`purpose` names the draw: see `entropy`)."""
    return private_generator(*purpose).permutation(n)


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
            theirs = _concat((c[:, :width] for c in raised), width)  # only what is compared
            del raised  # the full points: only their compared bytes are kept
            ours_twice = _concat(recv_chunks(channel, Kind.PSI_DOUBLE_BLINDED, follower, width,
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


def receive_positions(channel: Channel, leader: str, total: int) -> np.ndarray:
    """The leader's answer: which of our `total` points (or pair rows) are shared, each once."""
    kind = Kind.PSI_POSITIONS
    positions = receive_array(channel, kind, leader, Due(np.int64, max_rows=total))
    if len(positions) and (positions.min() < 0 or positions.max() >= total):
        raise ProtocolError(f"{leader} sent '{kind.value}' outside the {total} points we sent")
    if len(np.unique(positions)) != len(positions):
        raise ProtocolError(f"{leader} sent '{kind.value}' naming a point twice")
    return positions
