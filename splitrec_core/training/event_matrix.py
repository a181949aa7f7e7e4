"""The label party's events in training: batches over people, gathered to their events.

Training draws its batches over people from the shared seed, exactly as with one row each, so a
feature party embeds the batch's people as it always does. The label party spreads each person's
embedding to that person's events (`Spread.to_events`), trains on the events, and returns
per-person gradients, summed over the person's events (`Spread.to_people`): the gradient of the
gather. That sum is what the chain rule gives, so split training computes what central training
on the pooled events does. How many events a person has never crosses as such; the gradient a
feature party gets for a person is a sum over that person's events, so its size grows with
them (the README's Events section says so).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from splitrec_core.events import People
from splitrec_core.features import FeatureMatrix

if TYPE_CHECKING:
    from splitrec_core.training.epochs import Plan


@dataclass(frozen=True)
class Spread:
    """Takes a batch's people to its events and back.

    `segments` holds each event's person within the batch (ascending; every person has an
    event); None when each row is a person of its own.
    """

    people: int
    segments: tf.Tensor | None = None

    @classmethod
    def of(cls, segments: tf.Tensor) -> Spread:
        """The spread of a batch whose events belong to `segments`' people."""
        return cls(int(segments[-1]) + 1 if len(segments) else 0, segments)

    def to_events(self, h: np.ndarray | tf.Tensor) -> np.ndarray | tf.Tensor:
        """Each event's row of `h` (per person)."""
        return h if self.segments is None else tf.gather(h, self.segments)

    def to_people(self, per_event: tf.Tensor) -> tf.Tensor:
        """Each person's sum over its events: the gradient of `to_events`."""
        if self.segments is None:
            return per_event
        return tf.math.unsorted_segment_sum(per_event, self.segments, self.people)

    def events_per_person(self) -> np.ndarray | None:
        """How many events each person of the batch has; None when each row is a person."""
        if self.segments is None:
            return None
        return np.bincount(np.asarray(self.segments), minlength=self.people)

    def labels_of_people(self, labels: np.ndarray) -> np.ndarray:
        """Per person and task, whether any of its events is positive."""
        if self.segments is None:
            return labels
        return tf.math.unsorted_segment_max(labels, self.segments, self.people).numpy()


def event_batches(plan: Plan, epoch: int, people: People, *matrices: np.ndarray,
                  ) -> list[tuple[tf.Tensor, ...]]:
    """Every batch of `epoch`, drawn over people as `Plan.batch_tensors` draws rows.

    Per batch, the rows of each of `matrices` (per event) that belong to the batch's people,
    then each row's person within the batch.
    """
    order = plan.epoch_order(epoch)
    rows, segments = people.rows(order)
    batch = np.arange(len(order)) // plan.batch_size  # full batches, then the remainder
    sizes = np.bincount(batch, weights=people.counts[order]).astype(np.int64).tolist()
    within = (segments % plan.batch_size).astype(np.int32)  # each event's person in its batch
    columns = [tf.split(tf.constant(m[rows]), sizes) for m in matrices]
    return list(zip(*columns, tf.split(tf.constant(within), sizes), strict=True))


def spread_of(data: FeatureMatrix | EventMatrix) -> Spread:
    """How the embeddings of `data`'s people reach its rows (one row each, or their events)."""
    if isinstance(data, EventMatrix):
        return Spread.of(tf.constant(data.people.person_of_rows()))
    return Spread(len(data))


@dataclass(frozen=True)
class EventMatrix:
    """The label party's model inputs and labels per event, grouped by person.

    It stands in for a `FeatureMatrix` in the label party's loop: its length, `take` and
    `chunks` count people (as the feature parties' rows do), its `cats`, `nums` and labels
    hold events.
    """

    events: FeatureMatrix
    people: People

    @classmethod
    def read(cls, path: Path) -> EventMatrix:
        """Load the label party's features Parquet (rows in common-position order)."""
        return cls(FeatureMatrix.read(path), People.of_positions(FeatureMatrix.positions(path)))

    def __len__(self) -> int:
        return len(self.people)

    @property
    def cats(self) -> np.ndarray:
        """Categorical inputs per event."""
        return self.events.cats

    @property
    def nums(self) -> np.ndarray:
        """Numeric inputs per event."""
        return self.events.nums

    def task_labels(self, tasks: list[str]) -> np.ndarray:
        """Labels per event, one column per task."""
        return self.events.task_labels(tasks)

    def take(self, people: np.ndarray | slice) -> EventMatrix:
        """The events of these people (indices or a slice), grouped as they are."""
        chosen = np.arange(len(self))[people]
        rows, _ = self.people.rows(chosen)
        return EventMatrix(self.events.take(rows),
                           People(np.concatenate([[0], np.cumsum(self.people.counts[chosen])])))

    def chunks(self, size: int) -> Iterator[EventMatrix]:
        """The people in order, `size` at a time, with their events."""
        for start in range(0, len(self), size):
            yield self.take(slice(start, start + size))


    def batches(self, plan: Plan, epoch: int, tasks: list[str] | None = None,
                ) -> list[tuple[tf.Tensor, ...]]:
        """Every batch of `epoch`: `cats`, `nums`, with `tasks` their labels, then segments."""
        labels = [self.task_labels(tasks)] if tasks else []
        return event_batches(plan, epoch, self.people, self.cats, self.nums, *labels)
