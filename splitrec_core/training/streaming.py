"""A party's features read a row group at a time while it trains (`training.stream_buffer` > 0).

That way its memory holds a few row groups, not its whole table.

Every party's `train.parquet` holds the same people in the same (common-position) order, cut
into row groups at the same rows (`features.build.ROW_GROUP_ROWS`). An epoch visits the row
groups in an order drawn from the shared seed, and shuffles the fitting rows of `stream_buffer`
groups at a time with the same generator: every party draws the same batches without a message.
The batch sizes are those of in-memory training (full batches, then the remainder), so the
traced steps are the same; the order differs from central training's, which shuffles all rows
at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import tensorflow as tf

from splitrec_core.features import FeatureMatrix
from splitrec_core.training.epochs import Plan

STREAM = 0x57EA  # keeps the streamed order's generator apart from every other use of the seed


def open_features(path: Path, stream_buffer: int) -> FeatureMatrix | StreamedFeatures:
    """A features file, read whole or streamed.

    With `stream_buffer` 0 it is read whole, else streamed `stream_buffer` row groups at a time.
    """
    return StreamedFeatures(path, stream_buffer) if stream_buffer else FeatureMatrix.read(path)


def rebatch(pieces: Iterable[FeatureMatrix], size: int) -> Iterator[FeatureMatrix]:
    """The rows of `pieces`, in order, `size` at a time (the last batch holds what is left)."""
    carry: FeatureMatrix | None = None
    for piece in pieces:
        carry = piece if carry is None else FeatureMatrix.concat([carry, piece])
        while len(carry) >= size:
            yield carry.take(slice(0, size))
            carry = carry.take(slice(size, None))
    if carry is not None and len(carry):
        yield carry


class StreamedFeatures:
    """A features Parquet file, read a row group at a time."""

    def __init__(self, path: Path, buffer_groups: int) -> None:
        self.path, self.buffer_groups = Path(path), buffer_groups
        metadata = pq.ParquetFile(self.path).metadata
        sizes = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
        self.first = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])

    def __len__(self) -> int:
        return int(self.first[-1])

    def _group(self, group: int, rows: np.ndarray | slice = slice(None)) -> FeatureMatrix:
        """Rows `rows` (within the group) of row group `group`."""
        return FeatureMatrix.of(pq.ParquetFile(self.path).read_row_group(group)).take(rows)

    def take(self, rows: np.ndarray) -> FeatureMatrix:
        """These rows (ascending), reading only the row groups that hold them."""
        groups = np.searchsorted(self.first, rows, side="right") - 1
        parts = [self._group(g, rows[groups == g] - self.first[g]) for g in np.unique(groups)]
        return FeatureMatrix.concat(parts) if parts else self._group(0, slice(0, 0))

    def chunks(self, size: int) -> Iterator[FeatureMatrix]:
        """The rows in order, `size` at a time (the same cuts as in memory)."""
        return rebatch((self._group(g) for g in range(len(self.first) - 1)), size)

    def batches(self, plan: Plan, epoch: int, tasks: list[str] | None = None,
                ) -> Iterator[tuple[tf.Tensor, ...]]:
        """Every batch of `epoch`: `cats`, `nums`, and with `tasks` their labels.

        The row groups come in a seeded order, the fitting rows of `buffer_groups` groups
        shuffled together.
        """
        rng = np.random.default_rng([plan.seed, epoch, STREAM])
        fits = np.zeros(len(self), bool)
        fits[plan.fit] = True
        order = rng.permutation(len(self.first) - 1)

        def shuffled() -> Iterator[FeatureMatrix]:
            for start in range(0, len(order), self.buffer_groups):
                buffer = FeatureMatrix.concat([
                    self._group(g, np.flatnonzero(fits[self.first[g]:self.first[g + 1]]))
                    for g in order[start : start + self.buffer_groups]])
                yield buffer.take(rng.permutation(len(buffer)))

        for batch in rebatch(shuffled(), plan.batch_size):
            labels = [batch.task_labels(tasks)] if tasks else []
            yield tuple(tf.constant(m) for m in (batch.cats, batch.nums, *labels))
