"""Embeddings and gradients cross the channel in float32, float16 or int8 with a scale per row."""

from __future__ import annotations

from functools import partial

import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf

from splitrec_core.channel import Kind, LocalHub
from splitrec_core.channel.framing import ipc_bytes
from splitrec_core.training.wire import BatchesIn, BatchesOut, Wire

INT8 = Wire("int8")


def _rows(seed: int = 0) -> np.ndarray:
    """A batch of cut-layer rows `[1024, 32]` whose magnitudes span six orders."""
    rng = np.random.default_rng(seed)
    magnitude = 10.0 ** rng.uniform(-4, 2, size=(1024, 1))
    return (rng.normal(size=(1024, 32)) * magnitude).astype(np.float32)


def test_int8_values_and_scale_of_a_hand_checked_row():
    # Prepare: the largest magnitude, 2.54, sets the scale 0.02
    row = np.array([[0.0, 2.54, -1.0, 0.5]], np.float32)

    # Execute
    table = INT8.pack(row)

    # Assert: one table, the values as a fixed-size list of int8, one float32 scale per row
    assert table.column_names == ["value", "scale"]
    assert str(table.schema.field("value").type) == "fixed_size_list<item: int8>[4]"
    assert table.column("value").to_pylist() == [[0, 127, -50, 25]]
    assert table.column("scale").type == pa.float32()
    np.testing.assert_allclose(table.column("scale").to_pylist(), [0.02], rtol=1e-6)
    np.testing.assert_allclose(INT8.unpack(table), row, rtol=1e-6)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_int8_round_trip_is_within_half_a_scale_step(as_tensor):
    # Prepare
    rows = _rows()
    sent = tf.constant(rows) if as_tensor else rows

    # Execute
    got = INT8.unpack(INT8.pack(sent))
    scales = np.abs(rows).max(axis=1, keepdims=True) / 127

    # Assert: rounding to nearest, plus float32 rounding far below a ten-thousandth of a step
    assert got.dtype == np.float32 and got.shape == rows.shape
    assert (np.abs(got - rows) <= scales * (0.5 + 1e-4)).all()
    assert np.abs(got - rows).max(axis=1).min() > 0  # it is lossy: every row moved somewhere
    np.testing.assert_allclose(np.abs(got).max(axis=1), np.abs(rows).max(axis=1), rtol=1e-6)


def test_int8_keeps_exact_zeros_and_a_row_of_zeros_divides_by_nothing():
    # Prepare: zeros inside a row, and whole rows of zeros
    rows = _rows()[:6]
    rows[0, :5] = 0.0
    rows[[2, 5]] = 0.0

    # Execute: any division by zero would raise here
    with np.errstate(all="raise"):
        table = INT8.pack(rows)
        got = INT8.unpack(table)

    # Assert
    assert (got[rows == 0] == 0).all()
    assert table.column("scale").to_pylist()[2] == 0.0
    np.testing.assert_array_equal(got[[2, 5]], np.zeros((2, 32), np.float32))


def test_int8_a_row_too_small_to_scale_crosses_as_zeros():
    # 127 over a row's largest value would overflow below about 3.7e-37
    rows = _rows()[:2]
    rows[1] = np.float32(1e-38)

    with np.errstate(divide="raise", over="raise", invalid="raise"):  # its scale is subnormal
        got = INT8.unpack(INT8.pack(rows))

    np.testing.assert_array_equal(got[1], np.zeros(32, np.float32))
    assert np.abs(got[0] - rows[0]).max() <= np.abs(rows[0]).max() / 254 * (1 + 1e-6)


def test_a_non_finite_row_arrives_non_finite_and_leaves_the_others_alone():
    # Prepare
    rows = _rows()[:4]
    rows[1, 3], rows[2, 7] = np.nan, np.inf

    # Execute
    got = INT8.unpack(INT8.pack(rows))

    # Assert: the receiver's finite check sees both rows; the others cross as usual
    assert not np.isfinite(got[1]).all() and not np.isfinite(got[2]).all()
    assert np.isfinite(got[[0, 3]]).all()
    np.testing.assert_array_equal(got[[0, 3]], INT8.unpack(INT8.pack(rows[[0, 3]])))


def test_int8_bytes_are_about_a_quarter_of_float32s():
    # Prepare
    rows = _rows()

    # Execute
    size = {dtype: ipc_bytes(Wire(dtype).pack(rows)).size for dtype in ("float32", "int8")}

    # Assert: 32 int8 values and a 4-byte scale per row, against 32 floats of 4 bytes
    assert 0.28 <= size["int8"] / size["float32"] < 0.29


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
def test_what_the_audit_sees_is_what_the_peer_unpacks(dtype):
    # Prepare
    wire, rows = Wire(dtype), _rows(1)

    # Execute
    audited = np.asarray(wire.as_received(rows))
    unpacked = np.asarray(wire.unpack(wire.pack(rows)))

    # Assert
    np.testing.assert_array_equal(audited, unpacked)
    assert (audited == rows).all() == (dtype == "float32")


def test_int8_batches_stacked_in_one_message_come_apart_as_sent_alone():
    # Prepare: three batches of different sizes, two per message, over an in-process channel
    hub = LocalHub()
    sender, receiver = hub.channel("a"), hub.channel("b")
    rows = _rows(2)
    batches = [rows[:300], rows[300:556], rows[556:700]]
    outbox = BatchesOut(partial(sender.send, Kind.EMBEDDING, "b"), INT8, per_message=2)

    # Execute
    for batch in batches:
        outbox.put(batch)
    outbox.flush()
    inbox = BatchesIn(receiver, Kind.EMBEDDING, "a", width=32, wire=INT8, per_message=2)
    got = [inbox.take(len(batch)) for batch in batches]
    inbox.end_epoch()

    # Assert: a scale per row, so stacking changes nothing
    assert sender.sent().as_dict()[Kind.EMBEDDING.value]["messages"] == 2
    for batch, arrived in zip(batches, got, strict=True):
        np.testing.assert_array_equal(arrived, INT8.unpack(INT8.pack(batch)))
