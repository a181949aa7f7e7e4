"""The local channel: real serialisation, per-kind accounting, no party left waiting."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pytest

from splitrec_core.channel import ChannelStats, Kind, LocalHub, array_table, table_array
from splitrec_core.channel.local import ChannelAborted


def test_round_trip_and_accounting():
    # Prepare
    hub = LocalHub()
    a, b = hub.channel("a"), hub.channel("b")
    h = np.arange(12, dtype=np.float32).reshape(3, 4)

    # Execute
    a.send(Kind.EMBEDDING, "b", array_table(h))
    a.send(Kind.EMBEDDING, "b", array_table(h[:1]))
    got = table_array(b.recv(Kind.EMBEDDING, "a"))

    # Assert
    np.testing.assert_array_equal(got, h)
    stats = hub.stats().as_dict()
    assert stats["embedding"]["messages"] == 2
    assert stats["embedding"]["bytes"] > h.nbytes + h[:1].nbytes  # payload plus IPC framing
    assert list(stats) == ["embedding"]


def test_unknown_kind_is_refused():
    hub = LocalHub()
    with pytest.raises(ValueError, match="unknown message kind 'raw_features'"):
        hub.channel("a").send("raw_features", "b", pa.table({"x": [1]}))  # type: ignore[arg-type]


def test_a_failed_party_releases_the_others():
    # Prepare
    hub = LocalHub()

    def waits_forever() -> None:
        hub.channel("b").recv(Kind.GRADIENT, "a")

    def fails() -> None:
        time.sleep(0.1)
        raise RuntimeError("party a crashed")

    # Execute / Assert: the original error surfaces quickly, the waiter is released
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="party a crashed"):
        hub.run({"a": fails, "b": waits_forever})
    assert time.monotonic() - start < 5
    with pytest.raises(ChannelAborted):
        hub.channel("c").recv(Kind.GRADIENT, "a")


def test_stats_merge():
    merged = ChannelStats.merge({"gradient": {"bytes": 10, "messages": 1}},
                                {"gradient": {"bytes": 5, "messages": 2},
                                 "embedding": {"bytes": 1, "messages": 1}})
    assert merged == {"embedding": {"bytes": 1, "messages": 1},
                      "gradient": {"bytes": 15, "messages": 3}}
