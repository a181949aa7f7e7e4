"""Events at the label party: validation by person, event alignment, batches over people, GAUC."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from splitrec_core.config import PartyConfig, TaskConfig, TrainingConfig
from splitrec_core.errors import InputError
from splitrec_core.evaluate import grouped_auc
from splitrec_core.events import People, event_alignment
from splitrec_core.features import FeatureMatrix
from splitrec_core.training.epochs import Plan
from splitrec_core.training.event_matrix import EventMatrix, Spread, event_batches
from splitrec_core.validate import validate_party

SHOP = PartyConfig(name="shop", file="shop.csv", id_column="user", split_column="split",
                   events=True, categorical=["item"], numeric=["price"])
CLICK = [TaskConfig(name="click", column="click")]


def _shop_file(tmp_path: Path, **changes: list[object]) -> Path:
    frame = pd.DataFrame({
        "user": ["a", "b", "a", "c", "b", "a"],
        "split": ["train", "test", "train", "train", "test", "train"],
        "item": ["x", "y", "y", "x", "z", "z"],
        "price": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        "click": [1, 0, 0, 1, 1, 0],
    } | changes)
    path = tmp_path / "shop.csv"
    frame.to_csv(path, index=False)
    return path


def test_an_events_file_is_validated_by_person(tmp_path: Path):
    # Execute
    result = validate_party(SHOP, _shop_file(tmp_path), tmp_path / "out", CLICK)

    # Assert: one ID per person (first appearance order), each event's person, split by person
    assert result.rows == 6
    assert pq.read_table(result.ids).column("id").to_pylist() == ["a", "b", "c"]
    assert pq.read_table(result.events).column("person").to_pylist() == [0, 1, 0, 2, 1, 0]
    assert pq.read_table(result.split).column("split").to_pylist() == ["train", "test", "train"]
    assert pq.read_table(result.table).num_rows == 6


def test_a_person_split_across_train_and_test_is_refused(tmp_path: Path):
    path = _shop_file(tmp_path, split=["train", "test", "test", "train", "test", "train"])

    with pytest.raises(InputError, match=r"shop\.csv, column 'split': 1 people have both "
                                         r"training and test events \(the split is by person\), "
                                         r"e\.g\. IDs \['a'\]"):
        validate_party(SHOP, path, tmp_path / "out", CLICK)
    assert not (tmp_path / "out").exists()


def test_events_of_people_outside_the_intersection_are_dropped_and_counted(tmp_path: Path):
    # Prepare: people 0 and 2 of 4 are shared (positions 1 and 0); person 1 and 3 are not
    events = tmp_path / "events.parquet"
    pq.write_table(pa.table({"person": np.array([0, 1, 2, 0, 3, 2, 2], np.int64)}), events)
    aligned = pa.table({"row": np.array([2, 0]), "position": np.array([0, 1]),
                        "is_train": np.array([True, False])})

    # Execute
    table, dropped = event_alignment(aligned, events)

    # Assert: each kept event at its person's position and flag; two events dropped
    assert dropped == 2
    assert table.column("row").to_pylist() == [0, 2, 3, 5, 6]
    assert table.column("position").to_pylist() == [1, 0, 1, 0, 0]
    assert table.column("is_train").to_pylist() == [False, True, False, True, True]


def test_batches_over_people_cover_each_fitting_person_once_with_all_its_events():
    # Prepare: 50 people with 1 to 4 events each, sorted by person
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 5, size=50)
    people = People(np.concatenate([[0], np.cumsum(counts)]))
    owner = people.person_of_rows()
    plan = Plan.of(TrainingConfig(batch_size=8, validation_fraction=0.2, seed=3), 50)

    # Execute
    batches = event_batches(plan, 0, people, owner)

    # Assert: the same people, in the same batches, as with one row per person; each event once
    one_row_each = plan.batch_tensors(0, np.arange(50))
    assert len(batches) == len(one_row_each)
    for (events, within), (persons,) in zip(batches, one_row_each, strict=True):
        assert np.array_equal(np.unique(events.numpy()), np.sort(persons.numpy()))
        assert np.array_equal(events.numpy(), persons.numpy()[within.numpy()])
        assert len(events) == counts[persons.numpy()].sum()
    seen = np.concatenate([b[0].numpy() for b in batches])
    assert np.array_equal(np.sort(seen), np.sort(np.repeat(plan.fit, counts[plan.fit])))


def test_the_gradient_a_person_gets_is_the_sum_over_its_events():
    spread = Spread.of(tf.constant([0, 0, 1, 2, 2, 2]))
    h = tf.constant([[1.0], [2.0], [3.0]])

    with tf.GradientTape() as tape:
        tape.watch(h)
        per_event = spread.to_events(h)
        loss = tf.reduce_sum(per_event * tf.constant([[1.0], [2.0], [3.0], [4.0], [5.0], [6.0]]))
    direct = tape.gradient(loss, h)

    assert spread.people == 3
    assert per_event.numpy().ravel().tolist() == [1, 1, 2, 3, 3, 3]
    summed = spread.to_people(tf.constant([[1.0], [2.0], [3.0], [4.0], [5.0], [6.0]]))
    assert summed.numpy().ravel().tolist() == [3, 3, 15] == tf.convert_to_tensor(direct).numpy(
    ).ravel().tolist()
    labels = np.array([[0, 1], [1, 0], [0, 0], [0, 0], [1, 0], [0, 0]], np.float32)
    assert spread.labels_of_people(labels).tolist() == [[1, 1], [0, 0], [1, 0]]


def test_an_event_matrix_takes_and_chunks_by_person():
    positions = np.array([0, 0, 2, 5, 5, 5, 7])
    matrix = EventMatrix(FeatureMatrix(np.arange(7)[:, None].astype(np.int32),
                                       np.zeros((7, 0), np.float32),
                                       {"click": np.arange(7, dtype=np.float32)}),
                         People.of_positions(positions))

    assert len(matrix) == 4
    taken = matrix.take(np.array([2, 0]))
    assert taken.cats.ravel().tolist() == [3, 4, 5, 0, 1]
    assert taken.people.counts.tolist() == [3, 2]
    assert [c.cats.ravel().tolist() for c in matrix.chunks(3)] == [[0, 1, 2, 3, 4, 5], [6]]


def test_gauc_is_each_persons_auc_weighted_by_its_events():
    rng = np.random.default_rng(1)
    people = np.repeat(np.arange(40), rng.integers(1, 12, size=40))
    labels = (rng.random(len(people)) < 0.4).astype(np.float32)
    scores = np.round(rng.random(len(people)) + 0.3 * labels, 1)  # rounded: ties within people

    aucs, weights = [], []
    for person in np.unique(people):
        mine = people == person
        if 0 < labels[mine].sum() < mine.sum():
            aucs.append(roc_auc_score(labels[mine], scores[mine]))
            weights.append(mine.sum())

    assert grouped_auc(labels, scores, people) == pytest.approx(np.average(aucs, weights=weights))
    assert grouped_auc(np.array([1.0, 0.0]), np.array([0.4, 0.3]), np.array([0, 1])) is None
