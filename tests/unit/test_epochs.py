"""The plan every party derives alone, early stopping, and the best weights and history kept.

The plan is the rows, the batch order and the learning rate.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from splitrec_core.config import TrainingConfig
from splitrec_core.training.epochs import (
    BestWeights,
    Decision,
    History,
    Plan,
    auc_per_task,
    split_validation,
)


def _plan(rows: int, **training: object) -> Plan:
    return Plan.of(TrainingConfig(**{"batch_size": 4, "seed": 11, **training}), rows)


def test_validation_rows_are_a_seeded_share_disjoint_from_the_fitting_rows():
    # Execute
    fit, held = split_validation(50, 0.2, seed=3)
    again = split_validation(50, 0.2, seed=3)
    other = split_validation(50, 0.2, seed=4)

    # Assert
    assert len(held) == 10 and len(fit) == 40
    assert sorted([*fit, *held]) == list(range(50))
    assert list(held) == sorted(held) and list(fit) == sorted(fit)
    np.testing.assert_array_equal(again[1], held)  # every party derives the same rows
    assert list(other[1]) != list(held)


def test_each_epoch_fits_every_row_once_in_an_order_all_parties_share():
    # Prepare: two parties' matrices over the same 22 training rows (row i holds i)
    plan = _plan(22, validation_fraction=0.0)
    label_side, feature_side = np.arange(22)[:, None], np.arange(22)[:, None] * 10

    # Execute
    epoch0 = plan.batch_tensors(0, label_side, feature_side)
    epoch1 = plan.batch_tensors(1, label_side, feature_side)

    # Assert: 5 batches of 4 and one of 2; both matrices in the same order; a new order per epoch
    assert [len(a) for a, _ in epoch0] == [4, 4, 4, 4, 4, 2]
    order0 = np.concatenate([a.numpy().ravel() for a, _ in epoch0])
    order1 = np.concatenate([a.numpy().ravel() for a, _ in epoch1])
    assert sorted(order0) == list(range(22)) and sorted(order1) == list(range(22))
    np.testing.assert_array_equal(np.concatenate([b.numpy().ravel() for _, b in epoch0]),
                                  order0 * 10)
    assert list(order0) != list(order1)
    np.testing.assert_array_equal(
        np.concatenate([a.numpy().ravel() for a, _ in _plan(22, validation_fraction=0.0)
                        .batch_tensors(0, label_side, feature_side)]), order0)


def test_validation_rows_are_never_fitted():
    plan = _plan(40, validation_fraction=0.25)
    batches = plan.batch_tensors(0, np.arange(40)[:, None])
    fitted = np.concatenate([a.numpy().ravel() for a, in batches])
    assert len(plan.validation) == 10
    assert set(fitted) == set(plan.fit) and not set(fitted) & set(plan.validation)


def test_learning_rate_decays_once_per_epoch():
    # 10 fitting rows in batches of 4: 3 steps an epoch
    constant = _plan(10, validation_fraction=0.0, learning_rate=0.01)
    decayed = _plan(10, validation_fraction=0.0, learning_rate=0.01, learning_rate_decay=0.5)
    assert constant.learning_rate(TrainingConfig(learning_rate=0.01)) == 0.01
    schedule = decayed.learning_rate(TrainingConfig(learning_rate=0.01, learning_rate_decay=0.5,
                                                    batch_size=4))
    rates = [float(schedule(step)) for step in (0, 2, 3, 5, 6)]
    assert rates == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0025])


def _decisions(val_aucs: list[list[float]], patience: int, epochs: int) -> list[Decision]:
    history, decisions = History(), []
    for epoch, aucs in enumerate(val_aucs):
        history.record([np.zeros(2)], aucs, np.full((2, 3), 1 / 3), np.ones(2), started=0.0)
        decisions.append(history.decide(patience, last_epoch=epoch == epochs - 1))
    return decisions


def test_early_stopping_waits_patience_epochs_for_a_better_mean_auc():
    # Mean validation AUC per epoch: 0.6, 0.7, 0.65, 0.7 (a tie is not better), 0.69
    aucs = [[0.6, 0.6], [0.8, 0.6], [0.7, 0.6], [0.6, 0.8], [0.68, 0.7]]
    decisions = _decisions(aucs, patience=3, epochs=10)
    assert [d.improved for d in decisions] == [True, True, False, False, False]
    assert [d.stop for d in decisions] == [False, False, False, False, True]


def test_the_last_epoch_stops_and_no_validation_keeps_the_last_epoch():
    assert [d.stop for d in _decisions([[0.6], [0.7]], patience=5, epochs=2)] == [False, True]
    history = History()
    for _ in range(3):
        history.record([np.zeros(1)], [], np.ones((1, 1)), np.ones(1), started=0.0)
    assert history.best_epoch == 3
    assert history.decide(patience=1, last_epoch=False) == Decision(improved=True, stop=False)


def test_history_round_trips_through_a_checkpoint_and_reports_weighted_loss():
    # Prepare: two epochs, two tasks weighted 1 and 0.5, two experts
    history = History()
    history.record([np.array([0.4, 0.2]), np.array([0.6, 0.4])], [0.7, 0.8],
                   np.array([[0.5, 0.5], [1.0, 0.0]]), np.array([1.0, 0.5]), started=0.0)
    history.record([np.array([0.3, 0.1])], [0.75, 0.85], np.array([[0.5, 0.5], [1.0, 0.0]]),
                   np.array([1.0, 0.5]), started=0.0)

    # Execute
    restored = History.from_arrays(history.arrays())
    report = restored.as_json(["a", "b"])

    # Assert: batch losses averaged per epoch; loss = sum of weight * task loss
    assert report["task_loss"] == {"a": pytest.approx([0.5, 0.3]), "b": pytest.approx([0.3, 0.1])}
    assert report["loss"] == pytest.approx([0.5 + 0.15, 0.3 + 0.05])
    assert report["val_auc"] == {"a": [0.7, 0.75], "b": [0.8, 0.85]}
    assert report["best_epoch"] == 2
    assert report["gate_entropy"]["a"] == pytest.approx([np.log(2), np.log(2)])
    assert report["gate_entropy"]["b"] == pytest.approx([0.0, 0.0], abs=1e-9)


def test_best_weights_restore_the_kept_epoch_and_survive_a_checkpoint():
    # Prepare
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    kept = [w.copy() for w in layer.get_weights()]
    best = BestWeights([layer])

    # Execute: keep, train on (change the weights), reload the kept copy into a new tracker
    best.keep()
    layer.set_weights([w + 1.0 for w in kept])
    reloaded = BestWeights([layer])
    reloaded.load(best.arrays())
    reloaded.restore()

    # Assert
    for a, b in zip(layer.get_weights(), kept, strict=True):
        np.testing.assert_array_equal(a, b)


def test_auc_per_task_is_half_where_validation_rows_hold_one_class():
    labels = np.array([[1, 0], [0, 0], [1, 0], [0, 0]], np.float32)
    probabilities = np.array([[0.9, 0.1], [0.2, 0.3], [0.6, 0.2], [0.4, 0.9]], np.float32)
    assert auc_per_task(labels, probabilities) == [1.0, 0.5]
