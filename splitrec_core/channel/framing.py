"""Messages as bytes: Arrow IPC streams, the kind line byte-stream transports put before them.

A message is its kind, a newline and the Arrow IPC stream (`frame`), so one stream (a process
pipe, a Flight stream) carries tables of any schema; numpy arrays travel as one-column tables
(`array_table`, `table_array`).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from splitrec_core.channel.contract import Kind, ProtocolError


def payload_bytes(kind: Kind, table: pa.Table) -> pa.Buffer:
    """`table` as the Arrow IPC stream a channel carries and counts.

    Refuses a `kind` that is not a `Kind`: nothing else may cross.
    """
    if not isinstance(kind, Kind):
        raise ValueError(f"unknown message kind {kind!r}")
    return ipc_bytes(table)


def ipc_bytes(table: pa.Table) -> pa.Buffer:
    """`table` as one Arrow IPC stream: schema, batches, end marker (what a transport carries)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


KIND_HEAD = 32  # a kind's name and its newline fit in this many bytes


def frame(kind: Kind, table: pa.Table) -> bytes:
    r"""The message that carries `table` as `kind`: `kind\n<Arrow IPC stream>`."""
    payload = payload_bytes(kind, table)  # refuses a kind that is not a `Kind`, first
    return kind.value.encode() + b"\n" + payload.to_pybytes()


def split_frame(message: memoryview) -> tuple[str, memoryview]:
    """A received message's kind, as its sender wrote it, and its payload.

    The receiver checks the kind: a peer may send anything.
    """
    head = bytes(message[:KIND_HEAD])
    end = head.find(b"\n")
    if end < 0:
        raise ValueError(f"a message without a kind line ({head!r}...)")
    return head[:end].decode(errors="replace"), message[end + 1 :]


def payload_size(message: bytes) -> int:
    """The bytes of a framed message's payload: what the sender counts, as the receiver does."""
    return split_frame(memoryview(message))[1].nbytes


def read_table(payload: memoryview | pa.Buffer) -> pa.Table:
    """The table a payload (an Arrow IPC stream) carries."""
    return pa.ipc.open_stream(pa.py_buffer(payload)).read_all()


def received_table(frm: str, kind: Kind, payload: memoryview | pa.Buffer) -> pa.Table:
    """The table a message of `kind` from `frm` carries; bytes that are not one is an error.

    pyarrow raises a bare `OSError` for some bytes (a negative length): that too is the peer's.
    """
    try:
        return read_table(payload)
    except (pa.ArrowException, ValueError, OSError) as error:
        first = (str(error).strip() or type(error).__name__).splitlines()[0]
        raise ProtocolError(f"{frm} sent '{kind.value}' that is not an Arrow IPC stream: "
                            f"{first}") from None


def array_table(array: np.ndarray, name: str = "value") -> pa.Table:
    """Wrap a 1-D or 2-D numpy array as a one-column Arrow table (2-D as fixed-size lists)."""
    if array.ndim == 1:
        return pa.table({name: array})
    flat = pa.array(np.ascontiguousarray(array).reshape(-1))
    return pa.table({name: pa.FixedSizeListArray.from_arrays(flat, array.shape[1])})


def table_array(table: pa.Table, name: str = "value") -> np.ndarray:
    """Inverse of `array_table`."""
    column = table.column(name).combine_chunks()
    if pa.types.is_fixed_size_list(column.type):
        width = column.type.list_size
        return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
    return column.to_numpy(zero_copy_only=False)
