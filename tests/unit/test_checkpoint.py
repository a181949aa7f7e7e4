"""Per-party checkpoints: weights and optimizer state come back exactly."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from splitrec_core.registry.provenance import fingerprint
from splitrec_core.training.checkpoint import Checkpoints


def _model_and_optimizer(seed: int) -> tuple[keras.layers.Dense, keras.optimizers.Adam]:
    keras.utils.set_random_seed(seed)
    layer = keras.layers.Dense(3)
    layer.build((None, 2))
    optimizer = keras.optimizers.Adam(0.1)
    optimizer.build(layer.trainable_variables)
    return layer, optimizer


def test_a_checkpoint_restores_weights_optimizer_state_and_extras(tmp_path: Path):
    # Prepare: one Adam step, so the optimizer has moments and a step count
    layer, optimizer = _model_and_optimizer(seed=1)
    optimizer.apply([np.ones((2, 3), np.float32), np.ones(3, np.float32)],
                    layer.trainable_variables)
    checkpoints = Checkpoints(tmp_path / "bank")
    extra = {"val_auc": np.array([[0.7, 0.8]])}

    # Execute: save, then restore into a freshly initialised copy
    checkpoints.save(1, [layer], [optimizer], extra)
    fresh, fresh_optimizer = _model_and_optimizer(seed=2)
    restored_extra = checkpoints.restore(1, [fresh], [fresh_optimizer])

    # Assert
    for a, b in zip(fresh.get_weights(), layer.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(fresh_optimizer.variables, optimizer.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(fresh_optimizer.iterations.numpy()) == 1
    np.testing.assert_array_equal(restored_extra["val_auc"], extra["val_auc"])


def test_only_the_last_two_epochs_are_kept_and_clear_removes_them(tmp_path: Path):
    layer, optimizer = _model_and_optimizer(seed=1)
    checkpoints = Checkpoints(tmp_path / "label")
    for epoch in (1, 2, 3, 4):
        checkpoints.save(epoch, [layer], [optimizer])
    assert checkpoints.completed() == [3, 4]
    checkpoints.clear()
    assert checkpoints.completed() == [] and not (tmp_path / "label").exists()


def test_fingerprint_follows_the_config_and_the_bytes_it_trains_on(tmp_path: Path):
    # Prepare
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    a.write_bytes(b"first")
    b.write_bytes(b"second")
    config = {"training": {"epochs": 3}}

    # Execute
    base = fingerprint(config, [a, b])
    reordered = fingerprint(config, [b, a])
    retrained = fingerprint({"training": {"epochs": 4}}, [a, b])
    b.write_bytes(b"changed")
    edited = fingerprint(config, [a, b])

    # Assert
    assert base == reordered
    assert len({base, retrained, edited}) == 3
