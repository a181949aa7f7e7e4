"""A party's feature transform, fitted on its own training rows only.

Categoricals become vocabulary indices (0 = unseen or missing); numerics go through a signed
log1p (census money columns span six orders of magnitude) and a z-score. The fit goes a
partition at a time: each yields mergeable `Statistics` (the categories it saw; count, mean and
squared deviations per numeric column), merged in partition order. The fitted `Transform` is
saved as `transform.json` so scoring applies exactly what training saw.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from splitrec_core.config import PartyConfig
from splitrec_core.io import read_json, write_json

CAT, NUM, LABEL = "cat:", "num:", "label:"


@dataclass(frozen=True)
class Transform:
    """A fitted per-party transform: vocabularies and numeric moments."""

    vocabularies: dict[str, list[str]]
    means: dict[str, float]
    stds: dict[str, float]

    @classmethod
    def fit(cls, party: PartyConfig, rows: pd.DataFrame) -> Transform:
        """Learn vocabularies and moments from `rows`, which must be training rows only."""
        return Statistics.of(party, rows).transform()

    @property
    def categorical(self) -> list[str]:
        """Categorical columns in model order."""
        return list(self.vocabularies)

    @property
    def numeric(self) -> list[str]:
        """Numeric columns in model order."""
        return list(self.means)

    def vocab_sizes(self) -> list[int]:
        """Embedding table size per categorical column (vocabulary + the unknown slot)."""
        return [len(v) + 1 for v in self.vocabularies.values()]

    def apply(self, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Return `(categorical int32 [n, n_cat], numeric float32 [n, n_num])` for `rows`."""
        cats = np.zeros((len(rows), len(self.vocabularies)), np.int32)
        for j, (column, vocab) in enumerate(self.vocabularies.items()):
            index = pd.Index(vocab)
            codes = index.get_indexer(rows[column].astype(object))
            cats[:, j] = codes + 1  # -1 (unseen or missing) becomes 0
        nums = np.zeros((len(rows), len(self.means)), np.float32)
        for j, column in enumerate(self.means):
            values = _signed_log1p(rows[column].to_numpy(np.float64))
            scaled = (values - self.means[column]) / self.stds[column]
            nums[:, j] = np.nan_to_num(scaled, nan=0.0)
        return cats, nums

    def save(self, path: Path) -> Path:
        """Write the transform as JSON."""
        return write_json(asdict(self), path)

    @classmethod
    def load(cls, path: Path) -> Transform:
        """Read a transform written by `save`."""
        return cls(**read_json(path))


def _signed_log1p(values: np.ndarray) -> np.ndarray:
    return np.sign(values) * np.log1p(np.abs(values))


@dataclass(frozen=True)
class Moments:
    """Count, mean and sum of squared deviations of a numeric column's non-missing values.

    Two merge exactly (Chan et al.), so partitions can be fitted apart.
    """

    count: int
    mean: float
    m2: float

    @classmethod
    def of(cls, values: np.ndarray) -> Moments:
        """The moments of `values`, NaN (missing) left out."""
        present = values[~np.isnan(values)]
        if not len(present):
            return cls(0, 0.0, 0.0)
        mean = np.mean(present)
        return cls(len(present), float(mean), float(np.sum((present - mean) ** 2)))

    def __add__(self, other: Moments) -> Moments:
        if not other.count or not self.count:
            return self if not other.count else other
        count = self.count + other.count
        delta = other.mean - self.mean
        return Moments(count, self.mean + delta * other.count / count,
                       self.m2 + other.m2 + delta**2 * self.count * other.count / count)

    @property
    def std(self) -> float:
        """The population standard deviation, 1 where it is 0 or there are no values."""
        std = math.sqrt(self.m2 / self.count) if self.count else 0.0
        return std if std > 0 else 1.0


@dataclass(frozen=True)
class Statistics:
    """What a fit needs from some training rows: the categories seen, and numeric moments."""

    categories: dict[str, frozenset[str]]
    moments: dict[str, Moments]

    @classmethod
    def of(cls, party: PartyConfig, rows: pd.DataFrame) -> Statistics:
        """The statistics of `rows` (training rows only)."""
        return cls({c: frozenset(str(v) for v in rows[c].dropna().unique())
                    for c in party.categorical},
                   {c: Moments.of(_signed_log1p(rows[c].to_numpy(np.float64)))
                    for c in party.numeric})

    def __add__(self, other: Statistics) -> Statistics:
        return Statistics({c: seen | other.categories[c] for c, seen in self.categories.items()},
                          {c: m + other.moments[c] for c, m in self.moments.items()})

    def transform(self) -> Transform:
        """The transform these statistics fit."""
        return Transform({c: sorted(seen) for c, seen in self.categories.items()},
                         {c: m.mean for c, m in self.moments.items()},
                         {c: m.std for c, m in self.moments.items()})
