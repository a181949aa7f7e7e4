"""ECDH private set intersection over Curve25519 (X25519 from libsodium, through PyNaCl).

Each party maps an ID to an X25519 u-coordinate with SHA-256 over a per-run domain string and
"raises" it to a secret scalar with `crypto_scalarmult`. X25519 clamps scalars, which clears the
cofactor, so blinding commutes: X(b, X(a, u)) == X(a, X(b, u)). The leader (the label party) sends
H(x)^a; each follower returns H(x)^ab in the same order and sends its own H(y)^b, shuffled; the
leader computes H(y)^ba, matches, keeps what every follower shares and tells each follower which of
*its* points are in the intersection, in one common random order. Under semi-honest parties each
follower learns only the final intersection; IDs outside it stay hidden behind unknown scalars.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from nacl.bindings import crypto_scalarmult
from nacl.utils import random as random_bytes

from splitrec_core.channel import Channel, Kind, array_table, table_array

POINT_BYTES = 32


class EmptyIntersection(ValueError):
    """No ID is held by every party; raised at every party so none waits forever."""


def hash_to_points(ids: Sequence[str], domain: str) -> list[bytes]:
    """Map each ID to a 32-byte X25519 u-coordinate, separated per run by `domain`."""
    prefix = hashlib.sha256(domain.encode("utf-8")).digest()
    return [hashlib.sha256(prefix + i.encode("utf-8")).digest() for i in ids]


def blind(points: Sequence[bytes], scalar: bytes, chunk_size: int = 20_000) -> list[bytes]:
    """Raise every point to `scalar`, in chunks on all cores.

    libsodium releases the GIL inside `crypto_scalarmult`, so threads scale with cores here
    without copying the points into other processes.
    """
    chunks = [points[i : i + chunk_size] for i in range(0, len(points), chunk_size)]

    def run(chunk: Sequence[bytes]) -> list[bytes]:
        return [crypto_scalarmult(scalar, p) for p in chunk]

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return [point for part in pool.map(run, chunks) for point in part]


def points_table(points: list[bytes]) -> np.ndarray:
    """Pack points into an (n, 32) uint8 array for the channel."""
    if not points:
        return np.zeros((0, POINT_BYTES), np.uint8)
    return np.frombuffer(b"".join(points), np.uint8).reshape(-1, POINT_BYTES)


def table_points(array: np.ndarray) -> list[bytes]:
    """Unpack an (n, 32) uint8 array into points."""
    data = np.ascontiguousarray(array, np.uint8).tobytes()
    return [data[i : i + POINT_BYTES] for i in range(0, len(data), POINT_BYTES)]


def _send_points(channel: Channel, kind: Kind, to: str, points: list[bytes]) -> None:
    channel.send(kind, to, array_table(points_table(points)))


def _recv_points(channel: Channel, kind: Kind, frm: str) -> list[bytes]:
    return table_points(table_array(channel.recv(kind, frm)).reshape(-1, POINT_BYTES))


def run_leader(
    channel: Channel, ids: Sequence[str], followers: Sequence[str], domain: str, chunk_size: int
) -> np.ndarray:
    """Run the leader's side; return the leader's local rows in the common order."""
    # 1. Blind our own IDs with a fresh scalar, shuffle and send them to every follower
    scalar = random_bytes(32)
    order = np.random.default_rng(secrets.randbits(128)).permutation(len(ids))
    ours = blind(hash_to_points([ids[i] for i in order], domain), scalar, chunk_size)
    for follower in followers:
        _send_points(channel, Kind.PSI_BLINDED, follower, ours)

    # 2. For each follower: match our double-blinded points against theirs raised to our scalar
    matches = []  # per follower: index into its sent list for each of our sent points, or -1
    for follower in followers:
        ours_twice = _recv_points(channel, Kind.PSI_DOUBLE_BLINDED, follower)
        theirs_twice = blind(_recv_points(channel, Kind.PSI_BLINDED, follower), scalar, chunk_size)
        where = {point: j for j, point in enumerate(theirs_twice)}
        matches.append(np.array([where.get(p, -1) for p in ours_twice], dtype=np.int64))

    # 3. Keep what all share, in a fresh random order; tell each follower its positions
    shared = np.flatnonzero(np.all(np.stack(matches) >= 0, axis=0)) if matches else np.arange(0)
    shared = shared[np.random.default_rng(secrets.randbits(128)).permutation(len(shared))]
    for follower, match in zip(followers, matches, strict=True):
        channel.send(Kind.PSI_POSITIONS, follower, array_table(match[shared]))
    if len(shared) == 0:
        raise EmptyIntersection(f"no ID is held by all of {[channel.me, *followers]}")
    return order[shared]


def run_follower(
    channel: Channel, ids: Sequence[str], leader: str, domain: str, chunk_size: int
) -> np.ndarray:
    """Run a follower's side; return its local rows in the common order."""
    # 1. Raise the leader's points to our fresh scalar and return them in the order received
    scalar = random_bytes(32)
    theirs = _recv_points(channel, Kind.PSI_BLINDED, leader)
    _send_points(channel, Kind.PSI_DOUBLE_BLINDED, leader, blind(theirs, scalar, chunk_size))

    # 2. Send our own blinded IDs, shuffled
    order = np.random.default_rng(secrets.randbits(128)).permutation(len(ids))
    ours = blind(hash_to_points([ids[i] for i in order], domain), scalar, chunk_size)
    _send_points(channel, Kind.PSI_BLINDED, leader, ours)

    # 3. Learn which of our sent points are shared, in the common order
    positions = table_array(channel.recv(Kind.PSI_POSITIONS, leader)).astype(np.int64)
    if len(positions) == 0:
        raise EmptyIntersection(f"no ID is held by {channel.me} and all other parties")
    return order[positions]
