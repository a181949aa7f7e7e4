"""What a received message must hold at the point where a protocol takes it.

A protocol names what is due (`Due`: the element type, the width of each row, the rows where
it knows them, finite values) and these checks refuse anything else with a `ProtocolError`
naming the peer, the kind and what was wrong, before a value reaches a model or a file. They
cost a pass over the values at most (the finite check is one float64 sum: a NaN or an infinity
anywhere makes it non-finite).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from splitrec_core.channel.contract import Channel, Kind, ProtocolError
from splitrec_core.channel.framing import table_array


@dataclass(frozen=True)
class Due:
    """What the array a message carries must look like.

    Attributes:
        dtype: its element type.
        width: the length of each row of a 2-D array; None for a 1-D array.
        rows: its rows exactly, where the receiver knows them.
        max_rows: at most this many rows.
        finite: no NaN or infinity (embeddings, gradients).
    """

    dtype: type[np.generic]
    width: int | None = None
    rows: int | None = None
    max_rows: int | None = None
    finite: bool = False


def check_array(values: Any, frm: str, kind: Kind, due: Due) -> np.ndarray:
    """`values` as a numpy array (no copy where it is one), if it is what `due` says."""
    array = np.asarray(values)
    what = f"{frm} sent '{kind.value}'"
    if array.dtype != due.dtype:
        raise ProtocolError(f"{what} of {array.dtype} where {np.dtype(due.dtype)} was due")
    if due.width is None and array.ndim != 1:
        raise ProtocolError(f"{what} of shape {array.shape} where one value a row was due")
    if due.width is not None and (array.ndim != 2 or (len(array) and array.shape[1] != due.width)):
        raise ProtocolError(f"{what} of shape {array.shape} where rows of width {due.width} "
                            f"were due")
    if due.rows is not None and len(array) != due.rows:
        raise ProtocolError(f"{what} of {len(array)} rows where {due.rows} were due")
    if due.max_rows is not None and len(array) > due.max_rows:
        raise ProtocolError(f"{what} of {len(array)} rows, more than the {due.max_rows} a "
                            f"message holds")
    if due.finite and not np.isfinite(array.sum(dtype=np.float64)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise ProtocolError(f"{what} with {bad} NaN or infinite values (of {array.size})")
    return array


def as_array(table: pa.Table, frm: str, kind: Kind, column: str = "value") -> np.ndarray:
    """The array a message of the one-column layout `array_table` writes carries."""
    try:
        return table_array(table, column)
    except (KeyError, pa.ArrowException, ValueError, TypeError) as error:
        raise ProtocolError(f"{frm} sent '{kind.value}' that does not hold one array "
                            f"({_first_line(error)})") from None


def receive_array(channel: Channel, kind: Kind, frm: str, due: Due,
                  column: str = "value") -> np.ndarray:
    """The array in the next message from `frm`, which must be of `kind` and as `due` says."""
    return check_array(as_array(channel.recv(kind, frm), frm, kind, column), frm, kind, due)


def receive_row(channel: Channel, kind: Kind, frm: str,
                columns: dict[str, pa.DataType]) -> dict[str, Any]:
    """The one row of the next message from `frm`: it must be of `kind`, with exactly `columns`."""
    table = channel.recv(kind, frm)
    schema = {field.name: field.type for field in table.schema}
    if schema != columns or table.num_rows != 1:
        wanted = ", ".join(f"{name}: {type_}" for name, type_ in columns.items())
        got = ", ".join(f"{name}: {type_}" for name, type_ in schema.items())
        raise ProtocolError(f"{frm} sent '{kind.value}' of {table.num_rows} rows of ({got}) "
                            f"where one row of ({wanted}) was due")
    return table.to_pylist()[0]


def _first_line(error: BaseException) -> str:
    return (str(error).strip() or type(error).__name__).splitlines()[0]
