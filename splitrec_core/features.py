"""Per-party feature engineering, fitted on that party's own training rows only.

Categoricals become vocabulary indices (0 = unseen or missing); numerics go through a signed
log1p (census money columns span six orders of magnitude) and a z-score. The fitted transform is
saved as `transform.json` so scoring applies exactly what training saw.

The fit and the transform go a partition (a row group of the validated table) at a time, on the
party's engine: each partition yields mergeable statistics (the categories it saw; count, mean
and squared deviations per numeric column), merged in partition order, so memory holds a few
partitions and the engineered columns, not the raw table.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import partial, reduce
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from splitrec_core.config import EngineConfig, PartyConfig
from splitrec_core.engine import LOCAL, in_order, party_executor
from splitrec_core.events import event_alignment
from splitrec_core.io import read_json, write_json, write_parquet

if TYPE_CHECKING:
    import tensorflow as tf

    from splitrec_core.epochs import Plan

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


@dataclass(frozen=True)
class PartyFeatures:
    """Where one party's engineered features went.

    At a label party that holds events, also how many events were kept and how many dropped
    (their people are outside the intersection).
    """

    train: Path
    test: Path
    transform: Path
    events: int | None = None
    dropped_events: int = 0

    @property
    def paths(self) -> tuple[Path, Path, Path]:
        """Every file: what training reads."""
        return self.train, self.test, self.transform


ROW_GROUP_ROWS = 1_000_000  # rows per row group of train.parquet and test.parquet


@dataclass(frozen=True)
class _Partition:
    """The aligned rows of one row group of a party's validated table.

    It holds their rows inside the group, their common positions and train flags (picklable: a
    Dask worker reads the group).
    """

    table: Path
    group: int
    rows: np.ndarray
    positions: np.ndarray
    is_train: np.ndarray

    def read(self) -> pd.DataFrame:
        """The group's aligned rows, in the order of `rows`."""
        group = pq.ParquetFile(self.table).read_row_group(self.group).to_pandas()
        return group.iloc[self.rows].reset_index(drop=True)


def _partitions(validated: Path, alignment: pa.Table) -> Iterator[_Partition]:
    """Every row group of `validated` with the aligned rows it holds."""
    rows = alignment.column("row").to_numpy()
    positions = alignment.column("position").to_numpy()
    is_train = alignment.column("is_train").to_numpy(zero_copy_only=False)
    by_row = np.argsort(rows, kind="stable")
    metadata = pq.ParquetFile(validated).metadata
    first = 0
    for group in range(metadata.num_row_groups):
        last = first + metadata.row_group(group).num_rows
        mine = by_row[np.searchsorted(rows, first, sorter=by_row):
                      np.searchsorted(rows, last, sorter=by_row)]
        yield _Partition(validated, group, rows[mine] - first, positions[mine], is_train[mine])
        first = last


def _statistics(party: PartyConfig, partition: _Partition) -> Statistics:
    rows = partition.read()
    return Statistics.of(party, rows[partition.is_train])


def _engineered(transform: Transform, partition: _Partition) -> pa.Table:
    """The partition's model inputs, with each row's position and train flag."""
    rows = partition.read()
    cats, nums = transform.apply(rows)
    columns = {"position": partition.positions.astype(np.int64), "is_train": partition.is_train}
    columns |= {CAT + c: cats[:, j] for j, c in enumerate(transform.categorical)}
    columns |= {NUM + c: nums[:, j] for j, c in enumerate(transform.numeric)}
    columns |= {c: rows[c].to_numpy(np.int8) for c in rows.columns if c.startswith(LABEL)}
    return pa.table(columns)


def build_features(
    party: PartyConfig, validated: Path, aligned: Path, out_dir: Path,
    engine: EngineConfig = LOCAL, events: Path | None = None,
) -> PartyFeatures:
    """Fit on this party's aligned training rows, transform train and test, write Parquet.

    This runs on the party's `engine`, a row group of `validated` at a time.

    Rows come out in common-position order, so row i of every party's train file is one person,
    in row groups of `ROW_GROUP_ROWS` that every party cuts at the same positions. A label party
    that holds events gives each row's person (`events`, from validation): its rows are events,
    each at its person's position, a person's events in the order of its file.
    """
    alignment, dropped = pq.read_table(aligned), 0
    if events is not None:
        alignment, dropped = event_alignment(alignment, events)
    partitions = list(_partitions(validated, alignment))
    with party_executor(engine) as executor:
        fits = in_order(executor, partial(_statistics, party), partitions)
        transform = reduce(operator.add, (stats for _, stats in fits)).transform()
        engineered = pa.concat_tables([
            table for _, table in in_order(executor, partial(_engineered, transform), partitions)])
    engineered = engineered.take(pc.sort_indices(engineered, [("position", "ascending")]))
    is_train = engineered.column("is_train")
    out = {}
    for name, rows in (("train", is_train), ("test", pc.invert(is_train))):
        out[name] = write_parquet(engineered.filter(rows).drop_columns(["is_train"]),
                                  out_dir / f"{name}.parquet", ROW_GROUP_ROWS)
    return PartyFeatures(out["train"], out["test"], transform.save(out_dir / "transform.json"),
                         engineered.num_rows if events is not None else None, dropped)


@dataclass(frozen=True)
class FeatureMatrix:
    """One party's model inputs for a set of rows, plus labels at the label party."""

    cats: np.ndarray
    nums: np.ndarray
    labels: dict[str, np.ndarray]

    @classmethod
    def read(cls, path: Path) -> FeatureMatrix:
        """Load a features Parquet written by `build_features`."""
        return cls.of(pq.read_table(path))

    @classmethod
    def of(cls, table: pa.Table) -> FeatureMatrix:
        """The model inputs and labels in (part of) a features table."""
        names = table.column_names

        def stack(prefix: str, dtype: type) -> np.ndarray:
            cols = [table.column(n).to_numpy() for n in names if n.startswith(prefix)]
            return (np.stack(cols, axis=1).astype(dtype) if cols
                    else np.zeros((table.num_rows, 0), dtype))

        labels = {n[len(LABEL):]: table.column(n).to_numpy().astype(np.float32)
                  for n in names if n.startswith(LABEL)}
        return cls(stack(CAT, np.int32), stack(NUM, np.float32), labels)

    @staticmethod
    def positions(path: Path) -> np.ndarray:
        """The common positions of the rows in a features Parquet."""
        return pq.read_table(path, columns=["position"]).column("position").to_numpy()

    def __len__(self) -> int:
        return len(self.cats)

    def take(self, rows: np.ndarray | slice) -> FeatureMatrix:
        """These rows (indices or a slice) of every matrix."""
        return FeatureMatrix(self.cats[rows], self.nums[rows],
                             {task: labels[rows] for task, labels in self.labels.items()})

    @staticmethod
    def concat(parts: list[FeatureMatrix]) -> FeatureMatrix:
        """The rows of `parts`, one after another (at least one part)."""
        return FeatureMatrix(np.concatenate([p.cats for p in parts]),
                             np.concatenate([p.nums for p in parts]),
                             {t: np.concatenate([p.labels[t] for p in parts])
                              for t in parts[0].labels})

    def task_labels(self, tasks: list[str]) -> np.ndarray:
        """The label party's labels, one column per task, as the loss takes them."""
        return np.stack([self.labels[t] for t in tasks], axis=1).astype(np.float32)

    def chunks(self, size: int) -> Iterator[FeatureMatrix]:
        """The rows in order, `size` at a time (for scoring)."""
        for start in range(0, len(self), size):
            yield self.take(slice(start, start + size))

    def batches(self, plan: Plan, epoch: int, tasks: list[str] | None = None,
                ) -> list[tuple[tf.Tensor, ...]]:
        """Every batch of `epoch`: `cats`, `nums`, and with `tasks` their labels.

        The fitting rows are shuffled all at once, exactly as central training shuffles them.
        """
        labels = [self.task_labels(tasks)] if tasks else []
        return plan.batch_tensors(epoch, self.cats, self.nums, *labels)
