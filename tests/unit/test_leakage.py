"""The leakage audit detects label leakage through gradients, and noise hides it."""

from __future__ import annotations

import numpy as np

from splitrec_core.privacy.leakage import LeakageAudit, attack_auc


def _gradients(labels: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Gradients shaped like a BCE cut layer's: positives rare, large and along one direction."""
    direction = np.array([1.0, -0.5, 0.25, 0.0])
    scale = np.where(labels == 1, 0.9, 0.1)[:, None] * np.where(labels == 1, 1, -1)[:, None]
    return scale * direction + rng.normal(scale=noise, size=(len(labels), 4))


def test_attack_auc_is_symmetric():
    labels = np.array([0, 0, 1, 1])
    assert attack_auc(np.array([0.1, 0.2, 0.8, 0.9]), labels) == 1.0
    assert attack_auc(np.array([0.9, 0.8, 0.2, 0.1]), labels) == 1.0
    assert attack_auc(np.array([1.0, 2.0]), np.array([1, 1])) == 0.5


def test_audit_detects_leakage_and_noise_hides_it():
    # Prepare
    rng = np.random.default_rng(0)
    leaky, noisy = LeakageAudit(["t"]), LeakageAudit(["t"])

    # Execute: 20 batches of 256, 10% positives
    for _ in range(20):
        labels = (rng.random(256) < 0.1).astype(np.float32)
        leaky.observe([_gradients(labels, 0.01, rng)], labels[:, None])
        noisy.observe([_gradients(labels, 50.0, rng)], labels[:, None])

    # Assert
    assert leaky.report()["t"]["norm_auc"] > 0.9
    assert leaky.report()["t"]["cosine_auc"] > 0.9
    assert noisy.report()["t"]["norm_auc"] < 0.56
    assert noisy.report()["t"]["cosine_auc"] < 0.56


def test_the_activity_attack_reads_events_per_person_from_summed_gradients_and_noise_hides_it():
    # Prepare: each person's gradient is the sum of one per event, as the label party returns it
    rng = np.random.default_rng(1)
    plain, noisy, one_each = (LeakageAudit(["t"]) for _ in range(3))

    # Execute: 20 batches of 256 people with 1 to 20 events each
    for _ in range(20):
        events = rng.integers(1, 21, size=256)
        labels = (rng.random(256) < 0.1).astype(np.float32)
        summed = np.stack([rng.normal(0.1, 0.02, size=(n, 4)).sum(axis=0) for n in events])
        plain.observe([summed], labels[:, None], events)
        noisy.observe([summed + rng.normal(scale=50.0, size=summed.shape)], labels[:, None],
                      events)
        one_each.observe([summed], labels[:, None], np.ones(256, np.int64))

    # Assert: plain gradients give activity away; noise hides it; without events nothing is said
    assert plain.activity_auc() > 0.95
    assert noisy.activity_auc() < 0.56
    assert one_each.activity_auc() == 0.5  # nobody is more active than the median person
    assert LeakageAudit(["t"]).activity_auc() is None
