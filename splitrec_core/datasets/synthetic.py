"""A small synthetic three-party dataset with known signal, for tests and benchmarks.

Two latent traits per person drive the two tasks; the bank's columns carry the first, the media
party's the second, and the label party's own columns only a little of each (`label_signal`).
Each party keeps its own random `keep` share of the people, in its own row order, as CSV or
Parquet. People are drawn a block at a time (a row group of each Parquet file), so ten million
rows take the memory of one block.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from splitrec_core.io import atomic_path

TASKS = ("income_50k", "never_married")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _generator(seed: int, block: int) -> np.random.Generator:
    """Block `block`'s own random stream.

    Block 0 keeps `seed`'s, so one-block data is unchanged.
    """
    return np.random.default_rng(seed if block == 0 else [seed, block])


def make_people(n: int, seed: int = 0, label_signal: float = 0.3, test_share: float = 0.3,
                block: int = 0, first: int = 0) -> pd.DataFrame:
    """`n` people, numbered from `first`, with every column of every party.

    This is before the vertical split; `block` picks the random stream.
    """
    rng = _generator(seed, block)
    wealth, youth = rng.normal(size=n), rng.normal(size=n)
    ids = [hashlib.sha256(f"synthetic:{seed}:{i}".encode()).hexdigest()[:12]
           for i in range(first, first + n)]
    return pd.DataFrame({
        "user_id": ids,
        "split": np.where(rng.random(n) < test_share, "test", "train"),
        "income_50k": (rng.random(n) < _sigmoid(3 * wealth - 1)).astype(int),
        "never_married": (rng.random(n) < _sigmoid(3 * youth)).astype(int),
        "age": np.round(40 - 10 * label_signal * youth + 10 * rng.normal(size=n)).clip(16, 90),
        "region": rng.choice(["north", "south", "east", "west"], size=n),
        "tier": np.where(label_signal * wealth + rng.normal(size=n) > 0, "gold", "basic"),
        "balance": np.round(np.exp(1.5 * wealth + 0.5 * rng.normal(size=n)) * 1000, 2),
        "product": pd.cut(wealth + 0.3 * rng.normal(size=n), [-np.inf, -1, 0, 1, np.inf],
                          labels=["p0", "p1", "p2", "p3"]).astype(str),
        "visits": np.round(np.exp(youth + 0.3 * rng.normal(size=n)) * 5).astype(int),
        "segment": pd.cut(youth + 0.3 * rng.normal(size=n), [-np.inf, -0.5, 0.5, np.inf],
                          labels=["s0", "s1", "s2"]).astype(str),
    })


PARTY_COLUMNS = {
    "advertiser": ["user_id", "split", *TASKS, "age", "region", "tier"],
    "bank": ["user_id", "balance", "product"],
    "media": ["user_id", "visits", "segment"],
}


KEEP_SEED = 1  # the stream that picks each party's people and their order


def write_parties(out_dir: Path, rows: int, seed: int = 0, label_signal: float = 0.3,
                  keep: float = 0.95, block_rows: int = 1_000_000, suffix: str = ".csv",
                  ) -> dict[str, Path]:
    """Draw `rows` people `block_rows` at a time and split them vertically, one file per party.

    The files are `suffix` .csv or .parquet; each party keeps its own subset in its own order.
    """
    paths = {party: out_dir / f"{party}{suffix}" for party in PARTY_COLUMNS}
    with ExitStack() as files:
        writers: dict[str, Callable[[pd.DataFrame], None]] = {}
        for block, first in enumerate(range(0, rows, block_rows)):
            people = make_people(min(block_rows, rows - first), seed, label_signal,
                                 block=block, first=first)
            rng = _generator(KEEP_SEED, block)
            for party, columns in PARTY_COLUMNS.items():
                kept = people.loc[rng.random(len(people)) < keep, columns]
                kept = kept.iloc[rng.permutation(len(kept))]
                if party not in writers:
                    tmp = files.enter_context(atomic_path(paths[party]))
                    writers[party] = _block_writer(files, tmp, kept)
                writers[party](kept)
    return paths


def _block_writer(files: ExitStack, path: Path,
                  first: pd.DataFrame) -> Callable[[pd.DataFrame], None]:
    """A function that appends a block of rows to `path` (a row group in Parquet).

    The file stays open until `files` closes.
    """
    if path.suffix == ".csv":
        handle = files.enter_context(path.open("w", newline="", encoding="utf-8"))
        first.iloc[:0].to_csv(handle, index=False)
        return lambda rows: rows.to_csv(handle, index=False, header=False)
    schema = pa.Schema.from_pandas(first, preserve_index=False)
    writer = files.enter_context(pq.ParquetWriter(path, schema))
    return lambda rows: writer.write_table(pa.Table.from_pandas(rows, schema, preserve_index=False))
