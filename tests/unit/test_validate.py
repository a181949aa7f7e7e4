"""Bad input gets one clear error naming file, column and problem, and nothing is overwritten."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from splitrec_core.config import Config, PartyConfig
from splitrec_core.errors import InputError
from splitrec_core.validate import validate_party


def _edit(path: Path, change) -> None:
    frame = pd.read_csv(path, dtype=str)
    change(frame)
    frame.to_csv(path, index=False)


def _validate(cfg: Config, run: Path, name: str):
    party = cfg.party(name)
    tasks = cfg.tasks if name == cfg.label_party else None
    return validate_party(party, cfg.party_file(party, run), run / "out" / name, tasks)


def test_valid_party_is_typed(synthetic_cfg: Config, synthetic_run: Path):
    # Execute
    result = _validate(synthetic_cfg, synthetic_run, "advertiser")

    # Assert
    table = pq.read_table(result.table)
    raw = pd.read_csv(synthetic_run / "data" / "advertiser.csv")
    assert result.rows == len(raw) == table.num_rows
    assert table.schema.field("age").type == "double"
    assert table.column("label:income_50k").to_pylist() == raw["income_50k"].tolist()
    assert pq.read_table(result.ids).column("id").to_pylist() == raw["user_id"].tolist()
    assert pq.read_table(result.split).column("split").to_pylist() == raw["split"].tolist()


def _set(column: str, row: int, value: object):
    """An edit that puts `value` into one cell."""
    def change(frame: pd.DataFrame) -> None:
        frame[column] = frame[column].astype(object)
        frame.loc[row, column] = value if not callable(value) else value(frame)
    return change


@pytest.mark.parametrize(
    ("party", "change", "column", "problem"),
    [
        ("bank", _set("user_id", 5, lambda f: f.loc[3, "user_id"]),
         "user_id", r"party 'bank': 1 duplicate ID\(s\) in 2 row\(s\), e.g. row\(s\) \[3, 5\]"),
        ("media", _set("user_id", 7, None),
         "user_id", r"null IDs in 1 row\(s\), e.g. row\(s\) \[7\]"),
        ("bank", _set("balance", 2, "12,5k"),
         "balance", r"non-numeric value '12,5k' in a numeric column, 1 row\(s\)"),
        ("advertiser", _set("income_50k", 4, "2"), "income_50k", r"label '2' is outside \{0,1\}"),
        ("advertiser", _set("never_married", 6, None), "never_married",
         r"missing label in 1 row\(s\), e.g. row\(s\) \[6\]"),
        ("advertiser", _set("split", 1, "holdout"),
         "split", r"split value 'holdout' is not one of"),
        ("media", lambda f: f.pop("segment"), "segment", "declared column is missing"),
    ],
    ids=["duplicate-id", "null-id", "non-numeric", "label-outside-0-1", "missing-label",
         "bad-split", "missing-column"],
)
def test_bad_input_names_file_column_and_problem(synthetic_cfg, synthetic_run, party, change,
                                                 column, problem):
    # Prepare: a good earlier output exists, then the input goes bad
    good = _validate(synthetic_cfg, synthetic_run, party)
    before = good.table.read_bytes()
    _edit(synthetic_cfg.party_file(synthetic_cfg.party(party), synthetic_run), change)

    # Execute
    with pytest.raises(InputError, match=problem) as caught:
        _validate(synthetic_cfg, synthetic_run, party)

    # Assert
    assert caught.value.file.endswith(f"{party}.csv")
    assert caught.value.column == column
    assert good.table.read_bytes() == before, "an earlier output was replaced"
    assert not list((synthetic_run / "out" / party).glob(".*")), "a temporary file was left behind"


def test_missing_and_unreadable_files(synthetic_cfg: Config, synthetic_run: Path):
    path = synthetic_cfg.party_file(synthetic_cfg.party("bank"), synthetic_run)
    path.unlink()
    with pytest.raises(InputError, match="file does not exist"):
        _validate(synthetic_cfg, synthetic_run, "bank")

    garbage = synthetic_run / "data" / "bank.parquet"
    garbage.write_bytes(b"\x00not parquet at all" * 10)
    cfg = synthetic_cfg.model_copy(update={"parties": [
        p.model_copy(update={"file": "bank.parquet"}) if p.name == "bank" else p
        for p in synthetic_cfg.parties]})
    with pytest.raises(InputError, match="bank.parquet: file is unreadable"):
        _validate(cfg, synthetic_run, "bank")


def _ids_only(tmp_path: Path, ids: list, normalize: list[str], raw_bytes: bytes | None = None):
    """Validate a one-column party file holding `ids` (or the literal CSV bytes given)."""
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "ids.csv"
    if raw_bytes is None:
        pd.DataFrame({"id": ids, "x": range(len(ids))}).to_csv(path, index=False)
    else:
        path.write_bytes(raw_bytes)
    party = PartyConfig(name="p", file="ids.csv", id_column="id", numeric=["x"])
    return validate_party(party, path, tmp_path / "out", normalize=normalize)


def test_ids_are_normalised_in_the_configured_order(tmp_path: Path):
    # Prepare: NFD "é", padding and case, which all name the same person after normalising
    ids = ["  Ann@X.com", "jose\u0301@y.org", "+1 (555) 010-0199"]

    # Execute
    result = _ids_only(tmp_path / "emails", ids, ["nfc", "strip", "lower"])
    phones = _ids_only(tmp_path / "phones", ["+1 (555) 010-0199", "555.010.0198"], ["digits"])

    # Assert
    assert pq.read_table(result.ids).column("id").to_pylist() == [
        "ann@x.com", "jos\u00e9@y.org", "+1 (555) 010-0199"]
    assert pq.read_table(phones.ids).column("id").to_pylist() == ["15550100199", "5550100198"]


def test_duplicates_after_normalisation_are_reported(tmp_path: Path):
    with pytest.raises(InputError,
                       match=r"duplicate ID\(s\) after normalisation \['strip', 'lower'\] "
                             r"in 2 row\(s\), e.g. row\(s\) \[0, 2\] .*\['ann@x.com'\]"):
        _ids_only(tmp_path, ["Ann@x.com", "bob", " ann@X.COM "], ["strip", "lower"])


def test_ids_empty_after_normalisation_are_reported(tmp_path: Path):
    with pytest.raises(InputError, match=r"empty IDs after normalisation \['digits'\] "
                                         r"in 1 row\(s\), e.g. row\(s\) \[1\]"):
        _ids_only(tmp_path, ["555-0101", "n/a", "555-0102"], ["digits"])


def test_ids_that_are_not_utf8_are_reported(tmp_path: Path):
    csv = b"id,x\nalice,1\nb\xffb,2\ncarol,3\n"
    with pytest.raises(InputError, match=r"column 'id': values that are not valid UTF-8 "
                                         r"in 1 row\(s\), e.g. row\(s\) \[1\]"):
        _ids_only(tmp_path, [], [], raw_bytes=csv)


def _bank(tmp_path: Path, suffix: str, rows: int = 2500):
    """The synthetic bank's file in 1,000-person blocks (Parquet: a row group each)."""
    from splitrec_core.datasets.synthetic import write_parties

    path = write_parties(tmp_path / suffix, rows, seed=2, block_rows=1000, suffix=suffix)["bank"]
    return PartyConfig(name="bank", file=path.name, id_column="user_id", categorical=["product"],
                       numeric=["balance"]), path


def test_a_file_in_partitions_validates_as_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # Prepare: the same people as CSV (read 700 rows at a time) and as Parquet (3 row groups)
    import splitrec_core.validate.readers as validate

    monkeypatch.setattr(validate, "PARTITION_ROWS", 700)
    party, csv = _bank(tmp_path, ".csv")
    _, parquet = _bank(tmp_path, ".parquet")

    # Execute
    from_csv = validate_party(party, csv, tmp_path / "from-csv")
    from_parquet = validate_party(party, parquet, tmp_path / "from-parquet")

    # Assert: one row group per partition; both give the same typed table and IDs
    assert pq.ParquetFile(from_csv.table).metadata.num_row_groups == 4
    assert pq.ParquetFile(from_parquet.table).metadata.num_row_groups == 3
    assert pq.read_table(from_csv.table).equals(pq.read_table(from_parquet.table))
    assert pq.read_table(from_csv.ids).equals(pq.read_table(from_parquet.ids))
    assert from_csv.rows == from_parquet.rows == pd.read_csv(csv).shape[0]


def test_problems_in_a_later_partition_name_the_file_s_own_rows(tmp_path: Path):
    # Prepare: row groups of about 950 rows; a duplicate across groups, a bad value in the third
    party, path = _bank(tmp_path, ".parquet")
    frame = pd.read_parquet(path)
    assert pq.ParquetFile(path).metadata.num_row_groups == 3
    duplicate, bad = frame.copy(), frame.astype({"balance": object})
    duplicate.loc[2300, "user_id"] = duplicate.loc[10, "user_id"]
    bad.loc[2000, "balance"] = "n/a"
    for name, edited in (("duplicate", duplicate), ("bad", bad)):
        table = pa.Table.from_pandas(edited.astype({"balance": str}) if name == "bad" else edited,
                                     preserve_index=False)
        pq.write_table(table, tmp_path / f"{name}.parquet", row_group_size=950)

    # Execute / Assert
    with pytest.raises(InputError,
                       match=r"duplicate ID\(s\) in 2 row\(s\), e.g. row\(s\) \[10, 2300\]"):
        validate_party(party, tmp_path / "duplicate.parquet", tmp_path / "out")
    with pytest.raises(InputError, match=r"non-numeric value 'n/a' .* row\(s\) \[2000\]"):
        validate_party(party, tmp_path / "bad.parquet", tmp_path / "out")
    assert not (tmp_path / "out").exists()


#: one row past 2^18: pandas reads a CSV file in blocks of 2^18 rows, and the IDs of a partition
#: of more than one block arrived in pieces (an AttributeError on 2026-12-07)
PAST_A_READER_BLOCK = (1 << 18) + 1


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_file_past_every_block_of_the_readers_validates_whole(tmp_path: Path, suffix: str):
    # Prepare: 262,145 people; Parquet in row groups of 100,000 (one partition each), CSV as one
    # partition of pandas' blocks; the same ID in the first and the last row of a second file
    rows = PAST_A_READER_BLOCK
    frame = pd.DataFrame({"user_id": [f"u{i}" for i in range(rows)],
                          "product": [f"p{i % 7}" for i in range(rows)],
                          "balance": [float(i % 1000) for i in range(rows)]})
    duplicate = frame.copy()
    duplicate.loc[rows - 1, "user_id"] = "u0"
    for name, table in (("bank", frame), ("duplicate", duplicate)):
        if suffix == ".csv":
            table.to_csv(tmp_path / f"{name}{suffix}", index=False)
        else:
            pq.write_table(pa.Table.from_pandas(table, preserve_index=False),
                           tmp_path / f"{name}{suffix}", row_group_size=100_000)
    party = PartyConfig(name="bank", file=f"bank{suffix}", id_column="user_id",
                        categorical=["product"], numeric=["balance"])

    # Execute
    result = validate_party(party, tmp_path / f"bank{suffix}", tmp_path / "out")
    with pytest.raises(InputError, match=rf"1 duplicate ID\(s\) in 2 row\(s\), e.g. row\(s\) "
                                         rf"\[0, {rows - 1}\] .*: \['u0'\]"):
        validate_party(party, tmp_path / f"duplicate{suffix}", tmp_path / "refused")

    # Assert: every row, in the file's order
    assert result.rows == rows
    assert pq.read_table(result.ids).column("id").to_pylist() == frame["user_id"].tolist()
    typed = pq.read_table(result.table)
    assert typed.column("balance").to_pylist() == frame["balance"].tolist()
    assert typed.column("product").to_pylist() == frame["product"].tolist()
    assert not (tmp_path / "refused").exists()
