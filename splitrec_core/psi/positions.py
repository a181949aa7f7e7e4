"""What both PSI protocols share: the common order, the leader's answer, the empty result."""

from __future__ import annotations

import numpy as np

from splitrec_core.channel import Channel, Kind, ProtocolError
from splitrec_core.channel.expect import Due, receive_array
from splitrec_core.privacy.entropy import private_generator


class EmptyIntersection(ValueError):
    """No ID is held by every party; raised at every party so none waits forever."""


def shuffled_order(n: int, *purpose: str) -> np.ndarray:
    """A private random order of `n` items (`purpose` names the draw: see `entropy`)."""
    return private_generator(*purpose).permutation(n)


def receive_positions(channel: Channel, leader: str, total: int) -> np.ndarray:
    """The leader's answer: which of our `total` points (or pair rows) are shared, each once."""
    kind = Kind.PSI_POSITIONS
    positions = receive_array(channel, kind, leader, Due(np.int64, max_rows=total))
    if len(positions) and (positions.min() < 0 or positions.max() >= total):
        raise ProtocolError(f"{leader} sent '{kind.value}' outside the {total} points we sent")
    if len(np.unique(positions)) != len(positions):
        raise ProtocolError(f"{leader} sent '{kind.value}' naming a point twice")
    return positions
