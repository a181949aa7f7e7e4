"""Where a party's private randomness comes from: fresh from the OS, unless a test pins it.

A party's PSI shuffles and its privacy noise must be unpredictable to every other party (a peer
that could replay the noise could subtract it), so they never derive from the shared
`training.seed`. Tests need the opposite: the same row order and the same noise on every run, so
that a trained figure reproduces exactly. A test pins them by setting `SPLITREC_TEST_ENTROPY` in
the environment (`pinned`); every draw then derives from that value and from what it is for, in
this process and in the party processes it starts. PSI's secret scalars are never pinned: they
change no result, and they must stay fresh on every run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import numpy as np

PIN_VARIABLE = "SPLITREC_TEST_ENTROPY"


def private_seed(*purpose: str) -> int:
    """A 63-bit seed for one use, named by `purpose` (e.g. `"psi-order", "bank"`).

    It is drawn from the OS, or derived from the pinned value and `purpose` when a test has
    pinned it.
    """
    pin = os.environ.get(PIN_VARIABLE)
    if pin is None:
        return secrets.randbits(63)
    _warn_once(pin)
    digest = hashlib.sha256("\0".join([pin, *purpose]).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def private_generator(*purpose: str) -> np.random.Generator:
    """A numpy generator seeded by `private_seed(*purpose)`."""
    return np.random.default_rng(private_seed(*purpose))


@cache
def _warn_once(pin: str) -> None:
    logging.getLogger(__name__).warning(
        "%s is set: shuffles and privacy noise are predictable (tests only)", PIN_VARIABLE)


@contextmanager
def pinned(value: str = "splitrec-tests") -> Iterator[None]:
    """Within the block, draw every private seed from `value` (for tests only)."""
    before = os.environ.get(PIN_VARIABLE)
    os.environ[PIN_VARIABLE] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PIN_VARIABLE, None)
        else:
            os.environ[PIN_VARIABLE] = before
