"""A small synthetic three-party dataset with known signal, for tests and benchmarks.

Two latent traits per person drive the two tasks; the bank's columns carry the first, the media
party's the second, and the label party's own columns only a little of each (`label_signal`).
Each party keeps its own random `keep` share of the people, in its own row order, as CSV.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from splitrec_core.io import atomic_path

TASKS = ("income_50k", "never_married")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def make_people(n: int, seed: int = 0, label_signal: float = 0.3, test_share: float = 0.3) -> pd.DataFrame:
    """One row per person with every column of every party, before the vertical split."""
    rng = np.random.default_rng(seed)
    wealth, youth = rng.normal(size=n), rng.normal(size=n)
    ids = [hashlib.sha256(f"synthetic:{seed}:{i}".encode()).hexdigest()[:12] for i in range(n)]
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


def write_parties(people: pd.DataFrame, out_dir: Path, keep: float = 0.95, seed: int = 1) -> dict[str, Path]:
    """Split `people` vertically into one CSV per party, each with its own subset and order."""
    rng = np.random.default_rng(seed)
    written = {}
    for party, columns in PARTY_COLUMNS.items():
        rows = people.loc[rng.random(len(people)) < keep, columns]
        rows = rows.iloc[rng.permutation(len(rows))]
        with atomic_path(out_dir / f"{party}.csv") as tmp:
            rows.to_csv(tmp, index=False)
        written[party] = out_dir / f"{party}.csv"
    return written
