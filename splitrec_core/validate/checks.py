"""Checks on one column of a party's file, each raising `InputError` that names the problem.

Every problem names the file, the column and what is wrong, with a count and up to three
example rows, so the party can fix its data without guessing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from splitrec_core.errors import InputError

SPLITS = ("train", "test")


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


def as_text(path: Path, column: str, values: pd.Series) -> pd.Series:
    """Non-null `values` as `str` (nulls stay null); bytes must decode as UTF-8."""
    if pd.api.types.infer_dtype(values, skipna=True) in ("bytes", "mixed"):
        values = values.map(
            lambda v: v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v,
            na_action="ignore")
        reject_surrogates(path, column, values)
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


def reject_surrogates(path: Path, column: str, values: pd.Series) -> None:
    """Refuse text holding lone surrogates: bytes that were not UTF-8 in the file."""
    bad = values.map(lambda v: isinstance(v, str) and not _encodes(v))
    if bad.any():
        raise InputError(path, column, f"values that are not valid UTF-8 in {_examples(bad)}")


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
