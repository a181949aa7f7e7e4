"""Check one party's raw table before anything else touches it, and write it in a typed form.

Every problem raises `InputError` naming the file, the column and what is wrong, with a count and
up to three example rows, so the party can fix its data without guessing.

A file is checked a partition at a time (`readers`: a Parquet file's row groups, a CSV file's
chunks), each column by its check (`checks`), on the party's engine, and written as one Parquet
row group per partition: memory holds a few partitions and the IDs, not the table. A problem
inside one partition is counted there; duplicate IDs and the presence of training rows are
checked over the whole file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from splitrec_core.columns import ID
from splitrec_core.config import EngineConfig, PartyConfig, TaskConfig
from splitrec_core.engine import LOCAL, in_order, party_executor
from splitrec_core.errors import InputError
from splitrec_core.events import PERSON, people_of, split_by_person
from splitrec_core.io import atomic_path, undone_on_failure, write_parquet
from splitrec_core.validate.checks import (
    as_text,
    check_ids,
    reject_duplicates,
    to_label,
    to_numeric,
    to_split,
)
from splitrec_core.validate.readers import RowGroup, partitions


@dataclass(frozen=True)
class ValidatedParty:
    """Where a party's checked data went.

    Its files hold its IDs alone (for PSI), its typed columns, and at the label party the
    train/test split alone (so a feature change does not re-run PSI). A label party that holds
    events has one ID per person in `ids` and its split per person, and `events` holds each
    row's person (`splitrec_core.events`).
    """

    ids: Path
    table: Path
    split: Path | None
    rows: int
    events: Path | None = None


@dataclass(frozen=True)
class _Checks:
    """What every partition of one party's file is checked against.

    Picklable: on a Dask engine a worker checks a partition.
    """

    path: Path
    party: PartyConfig
    tasks: tuple[TaskConfig, ...]
    normalize: tuple[str, ...]

    @property
    def declared(self) -> list[str]:
        split = [self.party.split_column] if self.party.split_column else []
        labels = [t.column for t in self.tasks]
        return list(dict.fromkeys([self.party.id_column, *self.party.feature_columns, *split,
                                   *labels]))

    @property
    def schema(self) -> pa.Schema:
        """The typed table's columns."""
        return pa.schema([*((c, pa.string()) for c in self.party.categorical),
                          *((c, pa.float64()) for c in self.party.numeric),
                          *([("split", pa.string())] if self.party.split_column else []),
                          *((f"label:{t.name}", pa.int8()) for t in self.tasks)])

    def __call__(self, partition: pd.DataFrame | RowGroup) -> tuple[pa.Table, pa.ChunkedArray]:
        """The partition's typed columns and normalised IDs; a problem raises `InputError`."""
        path, party = self.path, self.party
        frame = partition.read() if isinstance(partition, RowGroup) else partition
        ids = check_ids(path, party.id_column, frame[party.id_column], self.normalize)
        typed: dict[str, pd.Series] = {}
        for column in party.categorical:
            typed[column] = as_text(path, column, frame[column])
        for column in party.numeric:
            typed[column] = to_numeric(path, column, frame[column])
        if party.split_column:
            typed["split"] = to_split(path, party.split_column, frame[party.split_column])
        for task in self.tasks:
            typed[f"label:{task.name}"] = to_label(path, task.column, frame[task.column])
        table = pa.Table.from_pandas(pd.DataFrame(typed, index=frame.index), self.schema,
                                     preserve_index=False)
        # pandas' Arrow-backed strings come as one array or as several (a CSV chunk over 2^18
        # rows), so the IDs are always handed on chunked
        arrow = pa.Array.from_pandas(ids, type=pa.string())
        return table, arrow if isinstance(arrow, pa.ChunkedArray) else pa.chunked_array([arrow])


_MEMORY = pa.default_cpu_memory_manager()


def _own_copy(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pa.chunked_array([chunk.copy_to(_MEMORY) for chunk in column.chunks], column.type)


def validate_party(
    party: PartyConfig, path: Path, out_dir: Path, tasks: list[TaskConfig] | None = None,
    normalize: Sequence[str] = (), engine: EngineConfig = LOCAL,
) -> ValidatedParty:
    """Check a party's table and write `ids.parquet` and `validated.parquet` into `out_dir`.

    `tasks` is given for the label party only: their label columns must be 0/1. A party with
    `events` may hold many rows per ID: `ids.parquet` then holds each ID once, `events.parquet`
    each row's person, and the split must agree across a person's rows. `normalize`
    names the ID normalisations (see `NORMALIZERS`). The written table keeps the input's row
    order, so row i of both files is the same person. Partitions are checked on the party's
    `engine`; nothing is replaced unless every check passes.
    """
    checks = _Checks(path, party, tuple(tasks or ()), tuple(normalize))
    ids: list[pa.ChunkedArray] = []
    splits: list[pa.ChunkedArray] = []
    with undone_on_failure(out_dir), atomic_path(out_dir / "validated.parquet") as tmp, \
            pq.ParquetWriter(tmp, checks.schema) as writer, party_executor(engine) as executor:
        for _, (table, partition_ids) in in_order(executor, checks,
                                                  partitions(path, checks.declared)):
            writer.write_table(table)
            # Kept apart from the partition: from a worker, every array is a view into the one
            # message that brought the whole partition, which would stay in memory with it
            ids.append(_own_copy(partition_ids))
            splits += [_own_copy(table.column("split"))] if party.split_column else []
        all_ids = pa.chunked_array([chunk for part in ids for chunk in part.chunks], pa.string())
        if not len(all_ids):
            raise InputError(path, None, "file has no rows")
        person, events_file = None, None
        if party.events:  # PSI and the split go by person
            people, person = people_of(all_ids)
            events_file = write_parquet(pa.table({PERSON: person}), out_dir / "events.parquet")
        else:
            reject_duplicates(path, party.id_column, all_ids, normalize, party.name)
            people = all_ids
        split_file = None
        if party.split_column:
            split = pa.chunked_array(splits, pa.string())
            if not pc.any(pc.equal(split, "train")).as_py():
                raise InputError(path, party.split_column, "no training rows")
            if person is not None:
                split = split_by_person(path, party.split_column, split, person, people)
            split_file = write_parquet(pa.table({"split": split}), out_dir / "split.parquet")
        ids_file = write_parquet(pa.table({ID: people}), out_dir / "ids.parquet")
    return ValidatedParty(ids=ids_file, table=out_dir / "validated.parquet", split=split_file,
                          rows=len(all_ids), events=events_file)
