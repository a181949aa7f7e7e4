"""Per-party feature engineering, fitted on that party's own training rows only.

Categoricals become vocabulary indices (0 = unseen or missing); numerics go through a signed
log1p (census money columns span six orders of magnitude) and a z-score. The fitted transform is
saved as `transform.json` so scoring applies exactly what training saw.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from splitrec_core.config import PartyConfig
from splitrec_core.io import read_json, write_json, write_parquet

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
        vocabularies = {
            c: sorted(str(v) for v in rows[c].dropna().unique()) for c in party.categorical
        }
        means, stds = {}, {}
        for column in party.numeric:
            values = _signed_log1p(rows[column].to_numpy(np.float64))
            mean = float(np.nanmean(values)) if np.isfinite(values).any() else 0.0
            std = float(np.nanstd(values)) if np.isfinite(values).any() else 1.0
            means[column], stds[column] = mean, std if std > 0 else 1.0
        return cls(vocabularies, means, stds)

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
class PartyFeatures:
    """Where one party's engineered features went."""

    train: Path
    test: Path
    transform: Path

    @property
    def paths(self) -> tuple[Path, Path, Path]:
        """Every file: what training reads."""
        return self.train, self.test, self.transform


def build_features(
    party: PartyConfig, validated: Path, aligned: Path, out_dir: Path
) -> PartyFeatures:
    """Fit on this party's aligned training rows, transform train and test, write Parquet.

    Rows come out in common-position order, so row i of every party's train file is one person.
    """
    table = pq.read_table(validated).to_pandas()
    alignment = pq.read_table(aligned).to_pandas()
    train = alignment[alignment["is_train"]]
    test = alignment[~alignment["is_train"]]
    transform = Transform.fit(party, table.iloc[train["row"].to_numpy()])
    labels = [c for c in table.columns if c.startswith(LABEL)]
    out = {}
    for name, part in (("train", train), ("test", test)):
        rows = table.iloc[part["row"].to_numpy()].reset_index(drop=True)
        cats, nums = transform.apply(rows)
        columns = {"position": part["position"].to_numpy(np.int64)}
        columns |= {CAT + c: cats[:, j] for j, c in enumerate(transform.categorical)}
        columns |= {NUM + c: nums[:, j] for j, c in enumerate(transform.numeric)}
        columns |= {c: rows[c].to_numpy(np.int8) for c in labels}
        out[name] = write_parquet(pa.table(columns), out_dir / f"{name}.parquet")
    return PartyFeatures(out["train"], out["test"], transform.save(out_dir / "transform.json"))


@dataclass(frozen=True)
class FeatureMatrix:
    """One party's model inputs for a set of rows, plus labels at the label party."""

    cats: np.ndarray
    nums: np.ndarray
    labels: dict[str, np.ndarray]

    @classmethod
    def read(cls, path: Path) -> FeatureMatrix:
        """Load a features Parquet written by `build_features`."""
        table = pq.read_table(path)
        names = table.column_names

        def stack(prefix: str, dtype: type) -> np.ndarray:
            cols = [table.column(n).to_numpy() for n in names if n.startswith(prefix)]
            return np.stack(cols, axis=1).astype(dtype) if cols else np.zeros((table.num_rows, 0), dtype)

        labels = {n[len(LABEL):]: table.column(n).to_numpy().astype(np.float32)
                  for n in names if n.startswith(LABEL)}
        return cls(stack(CAT, np.int32), stack(NUM, np.float32), labels)

    @staticmethod
    def positions(path: Path) -> np.ndarray:
        """The common positions of the rows in a features Parquet."""
        return pq.read_table(path, columns=["position"]).column("position").to_numpy()

    def __len__(self) -> int:
        return len(self.cats)
