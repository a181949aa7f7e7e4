"""Reading a party's file a partition at a time: a Parquet row group, or a CSV chunk.

Each partition is a frame of the declared columns as text (nulls kept) or, for Parquet, the row
group a worker of the party's engine reads itself. Row labels count from the file's first row,
so a problem found in a later partition names the file's own rows. A file that is not UTF-8 is
read with its bad bytes kept as lone surrogates, so the check can name the rows that hold them.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from splitrec_core.errors import InputError
from splitrec_core.validate.checks import reject_surrogates

PARTITION_ROWS = 1_000_000  # rows of a CSV file checked at once
UNREADABLE = (OSError, ValueError, pa.ArrowException, UnicodeDecodeError)


def partitions(path: Path, columns: list[str]) -> Iterator[pd.DataFrame | RowGroup]:
    """The partitions of a party's file.

    Each is a frame of the declared `columns` as text (nulls kept) or, for Parquet, the row group
    a worker reads itself. Row labels count from the file's first row.
    """
    if not path.exists():
        raise InputError(path, None, "file does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            header = pd.read_csv(path, nrows=0, encoding_errors="surrogateescape").columns
            _require_columns(path, list(header), columns)
            yield from _csv_chunks(path, columns)
        elif suffix in (".parquet", ".pq"):
            metadata = pq.ParquetFile(path).metadata
            _require_columns(path, metadata.schema.to_arrow_schema().names, columns)
            first = 0
            for group in range(metadata.num_row_groups):
                yield RowGroup(path, group, first, columns)
                first += metadata.row_group(group).num_rows
        else:
            raise InputError(path, None, f"unsupported file type '{suffix}' (use .csv or .parquet)")
    except InputError:
        raise
    except UNREADABLE as exc:
        raise InputError(path, None, f"file is unreadable: {exc}") from None


def _csv_chunks(path: Path, columns: list[str]) -> Iterator[pd.DataFrame]:
    """A CSV file's declared columns, `PARTITION_ROWS` rows at a time."""
    utf8 = _is_utf8(path)
    options = {"usecols": columns, "keep_default_na": False, "na_values": [""],
               "chunksize": PARTITION_ROWS}
    options |= ({"dtype": str} if utf8 else  # else undecodable bytes become lone surrogates
                {"dtype": object, "encoding_errors": "surrogateescape"})
    with pd.read_csv(path, **options) as chunks:
        for chunk in chunks:
            for column in [] if utf8 else columns:
                reject_surrogates(path, column, chunk[column])
            yield chunk


@dataclass(frozen=True)
class RowGroup:
    """One row group of a Parquet file, read where it is checked.

    Checked on a worker of the party's cluster, it is never held by the driver.
    """

    path: Path
    group: int
    first_row: int
    columns: list[str]

    def read(self) -> pd.DataFrame:
        """The group's declared columns, rows labelled by their place in the file."""
        try:
            table = pq.ParquetFile(self.path).read_row_group(self.group, columns=self.columns)
        except UNREADABLE as exc:
            raise InputError(self.path, None, f"file is unreadable: {exc}") from None
        frame = table.to_pandas()
        frame.index = pd.RangeIndex(self.first_row, self.first_row + len(frame))
        return frame


def _require_columns(path: Path, present: list[str], declared: list[str]) -> None:
    missing = [c for c in declared if c not in present]
    if missing:
        raise InputError(path, missing[0], f"declared column is missing (file has {present[:12]})")


def _is_utf8(path: Path, block: int = 1 << 20) -> bool:
    """Whether the whole file decodes as UTF-8 (checked in blocks, at C speed)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with path.open("rb") as handle:
            while data := handle.read(block):
                decoder.decode(data)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True
