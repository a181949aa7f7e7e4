"""Check one party's raw table before anything else touches it, and write it in a typed form.

Every problem raises `InputError` naming the file, the column and what is wrong, with a count and
up to three example rows, so the party can fix its data without guessing.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

from splitrec_core.config import PartyConfig, TaskConfig
from splitrec_core.errors import InputError
from splitrec_core.io import write_parquet

SPLITS = ("train", "test")
ID = "id"


@dataclass(frozen=True)
class ValidatedParty:
    """Where a party's checked data went: its IDs alone (for PSI), its typed columns, and at the
    label party the train/test split alone (so a feature change does not re-run PSI)."""

    ids: Path
    table: Path
    split: Path | None
    rows: int


def read_raw(path: Path, columns: list[str]) -> pd.DataFrame:
    """Read the declared `columns` of a CSV or Parquet file as text, keeping nulls as nulls."""
    if not path.exists():
        raise InputError(path, None, "file does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            header = pd.read_csv(path, nrows=0, encoding_errors="surrogateescape").columns
            _require_columns(path, list(header), columns)
            if _is_utf8(path):
                frame = pd.read_csv(path, usecols=columns, dtype=str, keep_default_na=False,
                                    na_values=[""])
            else:  # undecodable bytes become lone surrogates, to be reported row by row
                frame = pd.read_csv(path, usecols=columns, dtype=object, keep_default_na=False,
                                    na_values=[""], encoding_errors="surrogateescape")
                for column in columns:
                    _reject_surrogates(path, column, frame[column])
        elif suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            _require_columns(path, pq.read_schema(path).names, columns)
            frame = pd.read_parquet(path, columns=columns)
        else:
            raise InputError(path, None, f"unsupported file type '{suffix}' (use .csv or .parquet)")
    except InputError:
        raise
    except (OSError, ValueError, pa.ArrowException, UnicodeDecodeError) as exc:
        raise InputError(path, None, f"file is unreadable: {exc}") from None
    if frame.empty:
        raise InputError(path, None, "file has no rows")
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
        values = values.map(lambda v: v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v,
                            na_action="ignore")
        _reject_surrogates(path, column, values)
    return values.astype(str).where(values.notna(), None)


def check_ids(path: Path, column: str, ids: pd.Series, normalize: Sequence[str] = ()) -> pd.Series:
    """Return the IDs as normalised text; reject nulls, bad UTF-8, empty IDs and duplicates.

    All of this runs before any cryptography, so a party sees every problem with its IDs first.
    """
    null = ids.isna()
    if null.any():
        raise InputError(path, column, f"null IDs in {_examples(null)}")
    text = as_text(path, column, ids)
    for step in normalize:
        text = NORMALIZERS[step](text)
    after = f" after normalisation {list(normalize)}" if normalize else ""
    empty = text.str.strip() == ""
    if empty.any():
        raise InputError(path, column, f"empty IDs{after} in {_examples(empty)}")
    duplicated = text.duplicated(keep=False)
    if duplicated.any():
        sample = sorted(text[duplicated].unique())[:3]
        raise InputError(path, column, f"duplicate IDs{after} in {_examples(duplicated)}: {sample}")
    return text


def to_numeric(path: Path, column: str, values: pd.Series) -> pd.Series:
    """Return `values` as float64; a non-null value that is not a number is an error."""
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    bad = numbers.isna() & values.notna()
    if bad.any():
        sample = values[bad].astype(str).iloc[0]
        raise InputError(path, column, f"non-numeric value '{sample}' in a numeric column, {_examples(bad)}")
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
        raise InputError(path, column, f"split value '{sample}' is not one of {SPLITS}, {_examples(bad)}")
    if not (text == "train").any():
        raise InputError(path, column, "no training rows")
    return text.astype(str)


def validate_party(
    party: PartyConfig, path: Path, out_dir: Path, tasks: list[TaskConfig] | None = None,
    normalize: Sequence[str] = (),
) -> ValidatedParty:
    """Check a party's table and write `ids.parquet` and `validated.parquet` into `out_dir`.

    `tasks` is given for the label party only: their label columns must be 0/1. `normalize`
    names the ID normalisations (see `NORMALIZERS`). The written table keeps the input's row
    order, so row i of both files is the same person.
    """
    label_columns = [t.column for t in tasks or []]
    split = [party.split_column] if party.split_column else []
    declared = list(dict.fromkeys([party.id_column, *party.feature_columns, *split, *label_columns]))
    frame = read_raw(path, declared)

    ids = check_ids(path, party.id_column, frame[party.id_column], normalize)
    typed: dict[str, pd.Series] = {}
    for column in party.categorical:
        typed[column] = as_text(path, column, frame[column])
    for column in party.numeric:
        typed[column] = to_numeric(path, column, frame[column])
    if party.split_column:
        typed["split"] = to_split(path, party.split_column, frame[party.split_column])
    for task in tasks or []:
        typed[f"label:{task.name}"] = to_label(path, task.column, frame[task.column])

    table = pa.Table.from_pandas(pd.DataFrame(typed), preserve_index=False)
    id_table = pa.table({ID: pa.array(ids.tolist(), pa.string())})
    split_file = None
    if party.split_column:
        split_file = write_parquet(pa.table({"split": typed["split"].tolist()}), out_dir / "split.parquet")
    return ValidatedParty(
        ids=write_parquet(id_table, out_dir / "ids.parquet"),
        table=write_parquet(table, out_dir / "validated.parquet"),
        split=split_file,
        rows=len(frame),
    )
