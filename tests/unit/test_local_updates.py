"""Local updates: the workset's bounds, the cosine weights, and what a local step changes."""

from __future__ import annotations

from collections import Counter, deque

import numpy as np
import pytest
import tensorflow as tf

from splitrec_core.model import TaskWeighting
from splitrec_core.training.local_updates import RECENT, LocalSettings, LocalUpdates, Workset
from splitrec_core.training.steps import BottomTrainer, LabelTrainer, StepSettings
from splitrec_core.training.steps.common import agreement
from tests.unit.test_model import PARTIES, _batch, _fresh_models


def test_a_cached_batch_is_drawn_at_most_reuse_times_and_only_the_last_size_are_kept():
    # Prepare: a workset of 3 batches, each reusable twice; 5 batches exchanged
    workset = Workset(LocalSettings(size=3, reuse=2), seed=0)
    for batch in range(5):
        workset.add(batch)

    # Execute: draw until nothing is left
    drawn = Counter()
    while (arrays := workset.draw()) is not None:
        drawn[arrays[0]] += 1

    # Assert: only the last three, each exactly twice
    assert drawn == {2: 2, 3: 2, 4: 2}


def test_a_new_batch_pushes_out_the_oldest_even_half_used():
    workset = Workset(LocalSettings(size=2, reuse=5), seed=1)
    workset.add("a")
    workset.add("b")
    for _ in range(3):
        workset.draw()
    workset.add("c")
    assert sorted(c.arrays[0] for c in workset.kept) == ["b", "c"]
    assert len(workset.kept) == 2


def _full_workset() -> Workset:
    workset = Workset(LocalSettings(size=5, reuse=5), seed=2)
    for batch in range(5):
        workset.add(batch)
    return workset


def test_local_steps_are_taken_only_until_the_message_is_ready():
    stepped: list[int] = []
    long_waits = deque([60.0] * RECENT, maxlen=RECENT)
    local = LocalUpdates(_full_workset(), stepped.append, waits=long_waits)

    # the message arrives after three steps
    assert local.meanwhile(lambda: len(stepped) == 3, lambda: "message") == "message"
    assert local.taken == 3 == len(stepped)
    local.meanwhile(lambda: True, lambda: "message")  # already there: no step
    assert local.taken == 3
    local.meanwhile(lambda: False, lambda: "message")  # never ready: every use left, then take
    assert local.taken == 25


@pytest.mark.parametrize(("waits", "step_s"), [
    ([0.001] * RECENT, 0.0005),                    # a peer's step on this host, not a link
    ([0.05] * RECENT, 0.06),                       # a link's, but a step would outlast it
    ([0.001] * 5 + [5.0] * (RECENT - 5), 0.0),     # a few long waits: the median is short
    ([5.0] * (RECENT - 1), 0.0),                   # a run's first waits: a peer's start
], ids=["short", "shorter-than-a-step", "median", "first-waits"])
def test_no_local_step_is_taken_in_a_wait_not_expected_to_outlast_one(waits, step_s):
    local = LocalUpdates(_full_workset(), lambda batch: None, waits=deque(waits, maxlen=RECENT),
                         step_s=step_s)
    assert local.meanwhile(lambda: False, lambda: "message") == "message"
    assert local.taken == 0


def test_rows_that_turned_below_the_threshold_weigh_nothing():
    fresh = tf.constant([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 0.0], [0.0, 0.0]])
    cached = tf.constant([[2.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    weights = agreement(fresh, cached, min_cosine=0.5).numpy()
    np.testing.assert_allclose(weights, [1.0, np.sqrt(0.5), 0.0, 0.0, 0.0], rtol=1e-6)


def _changed(before: list[np.ndarray], after: list[np.ndarray]) -> bool:
    return any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))


@pytest.mark.parametrize("turned", [False, True], ids=["agrees", "turned-away"])
def test_a_feature_party_steps_locally_only_on_rows_that_still_agree(turned):
    # Prepare: a bank bottom and a batch, its embedding as sent, a gradient for it
    bottoms, _ = _fresh_models()
    trainer = BottomTrainer(bottoms["bank"], StepSettings(0.01, local_min_cosine=0.5))
    trainer.trace()
    cats, nums = _batch()["bank"]
    sent = trainer.embed(cats, nums)
    grad = tf.ones_like(sent)
    before = bottoms["bank"].get_weights()

    # Execute: a local step, the embedding the gradient was computed on as sent or reversed
    trainer.local_step(cats, nums, -sent if turned else sent, grad)

    # Assert: a bottom whose rows all turned away does not move; either way it was a step
    assert _changed(before, bottoms["bank"].get_weights()) is not turned
    assert int(trainer.optimizer.iterations) == 1


@pytest.mark.parametrize("turned", [False, True], ids=["agrees", "turned-away"])
def test_the_label_party_steps_locally_only_on_rows_whose_gradient_still_agrees(turned):
    # Prepare: the label party's models and a batch with its feature parties' embeddings
    bottoms, top = _fresh_models()
    label, *followers = PARTIES
    trainer = LabelTrainer(bottoms[label], top, TaskWeighting([1.0, 1.0]),
                           StepSettings(0.01, local_min_cosine=0.5))
    trainer.trace()
    x = _batch()
    received = [bottoms[f](list(x[f])) for f in followers]
    labels = tf.constant(np.random.default_rng(3).integers(0, 2, (16, 2)), tf.float32)
    _, computed, _ = trainer.gradients(*x[label], received, labels)  # dL/dh as it was sent
    before = [w for m in trainer.models for w in m.get_weights()]

    # Execute
    trainer.local_step(*x[label], received, labels,
                       [-g for g in computed] if turned else list(computed))

    # Assert
    after = [w for m in trainer.models for w in m.get_weights()]
    assert _changed(before, after) is not turned
    assert int(trainer.optimizer.iterations) == 1
