"""ECDH PSI's arithmetic: IDs as X25519 points, blinded by a secret scalar, and matched.

Each party maps an ID to an X25519 u-coordinate with SHA-256 over a per-run domain string and
"raises" it to a secret scalar with `crypto_scalarmult` (libsodium, through PyNaCl). X25519
clamps scalars, which clears the cofactor, so blinding commutes: X(b, X(a, u)) == X(a, X(b, u)).
Points live in numpy arrays of shape (n, 32). The protocol that moves them is `ecdh`.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import partial

import numpy as np
from nacl.bindings import crypto_scalarmult
from nacl.utils import random as random_bytes

from splitrec_core.engine import in_order
from splitrec_core.progress import Progress

POINT_BYTES = 32
#: Bound on the chance that two different IDs compare equal anywhere in a run: 2^-40.
COLLISION_BITS = 40


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


def concat(parts: Iterable[np.ndarray], width: int) -> np.ndarray:
    """The (n, `width`) arrays stacked into one (none: an empty one)."""
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
