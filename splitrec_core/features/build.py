"""Per-party feature engineering: fit on the party's own training rows, write model inputs.

It goes a partition (a row group of the validated table) at a time, on the party's engine, so
memory holds a few partitions and the engineered columns, not the raw table; the inputs go to
`train.parquet` and `test.parquet` in row groups every party cuts at the same positions.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial, reduce
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from splitrec_core.config import EngineConfig, PartyConfig
from splitrec_core.engine import LOCAL, in_order, party_executor
from splitrec_core.events import event_alignment
from splitrec_core.features.transform import CAT, LABEL, NUM, Statistics, Transform
from splitrec_core.io import write_parquet


@dataclass(frozen=True)
class PartyFeatures:
    """Where one party's engineered features went.

    At a label party that holds events, also how many events were kept and how many dropped
    (their people are outside the intersection).
    """

    train: Path
    test: Path
    transform: Path
    events: int | None = None
    dropped_events: int = 0

    @property
    def paths(self) -> tuple[Path, Path, Path]:
        """Every file: what training reads."""
        return self.train, self.test, self.transform


ROW_GROUP_ROWS = 1_000_000  # rows per row group of train.parquet and test.parquet


@dataclass(frozen=True)
class _Partition:
    """The aligned rows of one row group of a party's validated table.

    It holds their rows inside the group, their common positions and train flags (picklable: a
    Dask worker reads the group).
    """

    table: Path
    group: int
    rows: np.ndarray
    positions: np.ndarray
    is_train: np.ndarray

    def read(self) -> pd.DataFrame:
        """The group's aligned rows, in the order of `rows`."""
        group = pq.ParquetFile(self.table).read_row_group(self.group).to_pandas()
        return group.iloc[self.rows].reset_index(drop=True)


def _partitions(validated: Path, alignment: pa.Table) -> Iterator[_Partition]:
    """Every row group of `validated` with the aligned rows it holds."""
    rows = alignment.column("row").to_numpy()
    positions = alignment.column("position").to_numpy()
    is_train = alignment.column("is_train").to_numpy(zero_copy_only=False)
    by_row = np.argsort(rows, kind="stable")
    metadata = pq.ParquetFile(validated).metadata
    first = 0
    for group in range(metadata.num_row_groups):
        last = first + metadata.row_group(group).num_rows
        mine = by_row[np.searchsorted(rows, first, sorter=by_row):
                      np.searchsorted(rows, last, sorter=by_row)]
        yield _Partition(validated, group, rows[mine] - first, positions[mine], is_train[mine])
        first = last


def _statistics(party: PartyConfig, partition: _Partition) -> Statistics:
    rows = partition.read()
    return Statistics.of(party, rows[partition.is_train])


def _engineered(transform: Transform, partition: _Partition) -> pa.Table:
    """The partition's model inputs, with each row's position and train flag."""
    rows = partition.read()
    cats, nums = transform.apply(rows)
    columns = {"position": partition.positions.astype(np.int64), "is_train": partition.is_train}
    columns |= {CAT + c: cats[:, j] for j, c in enumerate(transform.categorical)}
    columns |= {NUM + c: nums[:, j] for j, c in enumerate(transform.numeric)}
    columns |= {c: rows[c].to_numpy(np.int8) for c in rows.columns if c.startswith(LABEL)}
    return pa.table(columns)


def build_features(
    party: PartyConfig, validated: Path, aligned: Path, out_dir: Path,
    engine: EngineConfig = LOCAL, events: Path | None = None,
) -> PartyFeatures:
    """Fit on this party's aligned training rows, transform train and test, write Parquet.

    This runs on the party's `engine`, a row group of `validated` at a time.

    Rows come out in common-position order, so row i of every party's train file is one person,
    in row groups of `ROW_GROUP_ROWS` that every party cuts at the same positions. A label party
    that holds events gives each row's person (`events`, from validation): its rows are events,
    each at its person's position, a person's events in the order of its file.
    """
    alignment, dropped = pq.read_table(aligned), 0
    if events is not None:
        alignment, dropped = event_alignment(alignment, events)
    partitions = list(_partitions(validated, alignment))
    with party_executor(engine) as executor:
        fits = in_order(executor, partial(_statistics, party), partitions)
        transform = reduce(operator.add, (stats for _, stats in fits)).transform()
        engineered = pa.concat_tables([
            table for _, table in in_order(executor, partial(_engineered, transform), partitions)])
    engineered = engineered.take(pc.sort_indices(engineered, [("position", "ascending")]))
    is_train = engineered.column("is_train")
    out = {}
    for name, rows in (("train", is_train), ("test", pc.invert(is_train))):
        out[name] = write_parquet(engineered.filter(rows).drop_columns(["is_train"]),
                                  out_dir / f"{name}.parquet", ROW_GROUP_ROWS)
    return PartyFeatures(out["train"], out["test"], transform.save(out_dir / "transform.json"),
                         engineered.num_rows if events is not None else None, dropped)
