"""Events at the label party: many rows per person (impressions, clicks, conversions).

A label party that holds events (`events = true`) keeps one row per event, with the event's own
columns (the item shown, the slot, the hour) and its labels; a feature party keeps one row per
person. What crosses between parties stays per person:

- PSI aligns the label party's distinct IDs (`people_of`), so no party learns how many events a
  person has; each event then takes its person's common position (`event_alignment`), and an
  event whose person is outside the intersection is dropped, and counted, at the label party.
- The split is by person (`split_by_person`): a person's events are all training or all test.
- Training draws its batches over people (`splitrec_core.training.event_matrix`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from splitrec_core.errors import InputError

PERSON = "person"  # the events file's column: each event's person, a row of `ids.parquet`


def people_of(ids: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """The distinct IDs (in order of first appearance) and each row's index among them."""
    people = pc.unique(ids)
    return people, pc.index_in(ids, value_set=people).to_numpy().astype(np.int64)


def split_by_person(path: Path, column: str, split: pa.ChunkedArray, person: np.ndarray,
                    ids: pa.Array) -> pa.Array:
    """Each person's split ("train" or "test"); a person with events in both is an error.

    `split` and `person` are per event, `ids` the people's IDs (for the error's examples, which
    stay at the party that reads them).
    """
    is_train = pc.equal(split, "train").to_numpy(zero_copy_only=False)
    train = np.bincount(person, weights=is_train, minlength=len(ids))
    events = np.bincount(person, minlength=len(ids))
    mixed = np.flatnonzero((train > 0) & (train < events))
    if len(mixed):
        examples = ids.take(pa.array(mixed[:3])).to_pylist()
        raise InputError(path, column, f"{len(mixed)} people have both training and test events "
                                       f"(the split is by person), e.g. IDs {examples}")
    return pa.array(np.where(train > 0, "train", "test"))


def event_alignment(aligned: pa.Table, events: Path) -> tuple[pa.Table, int]:
    """The people's alignment (`row`, `position`, `is_train`) as an alignment of their events.

    Each event takes its person's position and train flag; its `row` is its row in the events
    file. Returns it, and how many events were dropped: those of people outside the
    intersection.
    """
    person = pq.read_table(events, columns=[PERSON]).column(0).to_numpy()
    people = int(person.max()) + 1 if len(person) else 0
    position = np.full(people, -1, np.int64)
    is_train = np.zeros(people, bool)
    rows = aligned.column("row").to_numpy()
    position[rows] = aligned.column("position").to_numpy()
    is_train[rows] = aligned.column("is_train").to_numpy(zero_copy_only=False)
    kept = np.flatnonzero(position[person] >= 0)
    table = pa.table({"row": kept, "position": position[person[kept]],
                      "is_train": is_train[person[kept]]})
    return table, len(person) - len(kept)


@dataclass(frozen=True)
class People:
    """Which rows of an event table belong to which person.

    The rows are grouped by person; person i's are rows `starts[i]` to `starts[i + 1]`.
    """

    starts: np.ndarray

    @classmethod
    def of_positions(cls, positions: np.ndarray) -> People:
        """The people of rows sorted by common position (each position one person)."""
        changes = np.flatnonzero(np.diff(positions)) + 1
        return cls(np.concatenate([[0], changes, [len(positions)]]).astype(np.int64)
                   if len(positions) else np.zeros(1, np.int64))

    def __len__(self) -> int:
        return len(self.starts) - 1

    @property
    def counts(self) -> np.ndarray:
        """Events per person."""
        return np.diff(self.starts)

    def rows(self, people: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows of `people` (person by person, in that order), and each row's index in it."""
        counts = self.counts[people]
        segments = np.repeat(np.arange(len(people)), counts)
        first = np.cumsum(counts) - counts
        return np.repeat(self.starts[people] - first, counts) + np.arange(counts.sum()), segments

    def person_of_rows(self) -> np.ndarray:
        """Each row's person."""
        return np.repeat(np.arange(len(self)), self.counts)
