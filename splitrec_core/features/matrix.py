"""A party's model inputs read back: categorical indices, numerics, labels, by common position."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from splitrec_core.features.transform import CAT, LABEL, NUM

if TYPE_CHECKING:
    import tensorflow as tf

    from splitrec_core.training.epochs import Plan


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
