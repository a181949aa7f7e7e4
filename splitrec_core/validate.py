"""Check one party's raw table before anything else touches it, and write it in a typed form.

Every problem raises `InputError` naming the file, the column and what is wrong, with a count and
up to three example rows, so the party can fix its data without guessing.

A file is checked a partition at a time (a Parquet file's row groups; a CSV file's chunks of
`PARTITION_ROWS`), on the party's engine, and written as one Parquet row group per partition:
memory holds a few partitions and the IDs, not the table. A problem inside one partition is
counted there; duplicate IDs and the presence of training rows are checked over the whole file.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator, Sequence
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

SPLITS = ("train", "test")
PARTITION_ROWS = 1_000_000  # rows of a CSV file checked at once
UNREADABLE = (OSError, ValueError, pa.ArrowException, UnicodeDecodeError)


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


def _partitions(path: Path, columns: list[str]) -> Iterator[pd.DataFrame | _RowGroup]:
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
                yield _RowGroup(path, group, first, columns)
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
                _reject_surrogates(path, column, chunk[column])
            yield chunk


@dataclass(frozen=True)
class _RowGroup:
    """One row group of a Parquet file, read where it is checked.

    Checked on a worker of the party's cluster, it is never held by the driver.
    """

    path: Path
    group: int
    first_row: int
    columns: list[str]

    def read(self) -> pd.DataFrame:
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


def _examples(mask: pd.Series) -> str:
    rows = [int(i) for i in mask[mask].index[:3]]
    return f"{int(mask.sum())} row(s), e.g. row(s) {rows} (0-based, header excluded)"


#: ID normalisations a config may ask for, applied in the order given.
NORMALIZERS: dict[str, Callable[[pd.Series], pd.Series]] = {
    "nfc": lambda ids: ids.str.normalize("NFC"),
    "strip": lambda ids: ids.str.strip(),
    "lower": lambda ids: ids.str.lower(),
    "digits": lambda ids: ids.str.replace(r"\D", "", regex=True),
}


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


def _reject_surrogates(path: Path, column: str, values: pd.Series) -> None:
    bad = values.map(lambda v: isinstance(v, str) and not _encodes(v))
    if bad.any():
        raise InputError(path, column, f"values that are not valid UTF-8 in {_examples(bad)}")


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def as_text(path: Path, column: str, values: pd.Series) -> pd.Series:
    """Non-null `values` as `str` (nulls stay null); bytes must decode as UTF-8."""
    if pd.api.types.infer_dtype(values, skipna=True) in ("bytes", "mixed"):
        values = values.map(
            lambda v: v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v,
            na_action="ignore")
        _reject_surrogates(path, column, values)
    return values.astype(str).where(values.notna(), None)


def check_ids(path: Path, column: str, ids: pd.Series, normalize: Sequence[str] = ()) -> pd.Series:
    """Return the IDs as normalised text; reject nulls, bad UTF-8 and empty IDs.

    Duplicates are checked over the whole file, by `reject_duplicates`.

    All of this runs before any cryptography, so a party sees every problem with its IDs first.
    """
    null = ids.isna()
    if null.any():
        raise InputError(path, column, f"null IDs in {_examples(null)}")
    text = as_text(path, column, ids)
    for step in normalize:
        text = NORMALIZERS[step](text)
    empty = text.str.strip() == ""
    if empty.any():
        raise InputError(path, column, f"empty IDs{_after(normalize)} in {_examples(empty)}")
    return text


def _after(normalize: Sequence[str]) -> str:
    return f" after normalisation {list(normalize)}" if normalize else ""


def reject_duplicates(path: Path, column: str, ids: pa.ChunkedArray,
                      normalize: Sequence[str] = (), party: str = "") -> None:
    """Reject an ID held by more than one row of the whole file (of `party`, named in the error).

    The IDs are sorted in Arrow and each compared with the next: ten million IDs cost a sorted copy
    and its order, not ten million Python strings nor a hash table of them (several times their
    bytes).
    """
    ordered = ids.take(pc.sort_indices(ids))
    same_as_next = pc.equal(ordered[1:], ordered[:-1])
    if pc.any(same_as_next).as_py():
        repeated = pc.unique(ordered[1:].filter(same_as_next))
        rows = pd.Series(pc.is_in(ids, value_set=repeated).to_numpy(zero_copy_only=False))
        sample = sorted(repeated.to_pylist())[:3]
        owner = f"party '{party}': " if party else ""
        raise InputError(path, column,
                         f"{owner}{len(repeated)} duplicate ID(s){_after(normalize)} in "
                         f"{_examples(rows)}: {sample}; only a label party with events = true "
                         f"may hold many rows per ID")


def to_numeric(path: Path, column: str, values: pd.Series) -> pd.Series:
    """Return `values` as float64; a non-null value that is not a number is an error."""
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    bad = numbers.isna() & values.notna()
    if bad.any():
        sample = values[bad].astype(str).iloc[0]
        raise InputError(path, column,
                         f"non-numeric value '{sample}' in a numeric column, {_examples(bad)}")
    return numbers


def to_label(path: Path, column: str, values: pd.Series) -> pd.Series:
    """Return `values` as int8 0/1; a missing label or anything else is an error."""
    missing = values.isna()
    if missing.any():
        raise InputError(path, column, f"missing label in {_examples(missing)}")
    numbers = pd.to_numeric(values, errors="coerce")
    bad = ~numbers.isin([0, 1])
    if bad.any():
        sample = values[bad].astype(str).iloc[0]
        raise InputError(path, column, f"label '{sample}' is outside {{0,1}} in {_examples(bad)}")
    return numbers.astype("int8")


def to_split(path: Path, column: str, values: pd.Series) -> pd.Series:
    """Return the train/test split column; other values are an error."""
    text = values.astype("string").str.strip().str.lower()
    bad = ~text.isin(SPLITS)
    if bad.any():
        sample = values[bad].astype(str).iloc[0]
        raise InputError(path, column,
                         f"split value '{sample}' is not one of {SPLITS}, {_examples(bad)}")
    return text.astype(str)


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

    def __call__(self, partition: pd.DataFrame | _RowGroup) -> tuple[pa.Table, pa.ChunkedArray]:
        """The partition's typed columns and normalised IDs; a problem raises `InputError`."""
        path, party = self.path, self.party
        frame = partition.read() if isinstance(partition, _RowGroup) else partition
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
                                                  _partitions(path, checks.declared)):
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
