"""The split MMoE: layers serialise, and split forward/backward equals the composed model."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from splitrec_core.config import ModelConfig, PrivacyConfig
from splitrec_core.model import MMoE, Bottom, TaskWeighting, bottom_model, composed_model, task_losses, top_model
from splitrec_core.train import LabelPartyTrainer

CFG = ModelConfig(embedding_dim=3, bottom_units=[8], cut_dim=4, num_experts=3, expert_units=5,
                  tower_units=2)
PARTIES = {"label": ([4, 3], 1), "bank": ([5], 2), "media": ([], 3)}  # vocab sizes, numerics


def _batch(n: int = 16, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {
        name: (np.stack([rng.integers(0, v, n) for v in vocab], axis=1).astype(np.int32)
               if vocab else np.zeros((n, 0), np.int32),
               rng.normal(size=(n, nums)).astype(np.float32))
        for name, (vocab, nums) in PARTIES.items()
    }


@pytest.fixture
def models():
    keras.utils.set_random_seed(1)
    bottoms = {name: bottom_model(name, vocab, nums, CFG) for name, (vocab, nums) in PARTIES.items()}
    return bottoms, top_model(list(PARTIES), 2, CFG)


def test_columns_use_their_own_rows_of_the_shared_table(models):
    # Column j's index i reads row offset_j + i of the one embedding table
    bottom = models[0]["label"].get_layer("bottom")
    table = bottom.embedding.embeddings.numpy()
    cats = np.array([[3, 2]], np.int32)
    looked_up = bottom.embedding(cats + np.array(bottom.offsets, np.int32)).numpy()
    np.testing.assert_array_equal(looked_up[0], table[[3, 4 + 2]])


def test_shapes(models):
    bottoms, top = models
    x = _batch(7)
    hs = [bottoms[p](list(x[p])) for p in PARTIES]
    assert all(h.shape == (7, CFG.cut_dim) for h in hs)
    assert top(hs).shape == (7, 2)
    gates = top.get_layer("mmoe").gate_weights(tf.concat(hs, axis=1))
    np.testing.assert_allclose(tf.reduce_sum(gates, axis=-1), np.ones((2, 7)), rtol=1e-5)


def test_split_step_equals_composed_model(models):
    # Prepare
    bottoms, top = models
    central = composed_model(bottoms, top)
    x = _batch()
    labels = tf.constant(np.random.default_rng(2).integers(0, 2, (16, 2)), tf.float32)
    weights = tf.constant([1.0, 0.5])

    # Execute: centrally composed loss and gradients
    with tf.GradientTape() as tape:
        logits = central([m for p in PARTIES for m in x[p]])
        central_loss = tf.reduce_sum(task_losses(labels, logits) * weights)
    central_grads = dict(zip([v.path for v in central.trainable_variables],
                             tape.gradient(central_loss, central.trainable_variables)))

    # Execute: the split step, as each party computes it
    received = [bottoms[p](list(x[p])) for p in ("bank", "media")]
    label = LabelPartyTrainer(bottoms["label"], top, TaskWeighting([1.0, 0.5]), 1e-3, PrivacyConfig())
    per_task, label_grads, sent = label.loss_and_gradients(*x["label"], labels, received)
    split_loss = tf.reduce_sum(per_task * weights)
    split_grads = dict(zip([v.path for v in label.variables], label_grads))
    for party, g in zip(("bank", "media"), sent):
        with tf.GradientTape() as tape:
            h = bottoms[party](list(x[party]))
        variables = bottoms[party].trainable_variables
        grads = tape.gradient(h, variables, output_gradients=g)
        split_grads |= dict(zip([v.path for v in variables], grads))

    # Assert
    assert abs(float(split_loss) - float(central_loss)) < 1e-5
    assert split_grads.keys() == central_grads.keys()
    for path, grad in central_grads.items():
        np.testing.assert_allclose(tf.convert_to_tensor(split_grads[path]),
                                   tf.convert_to_tensor(grad), atol=1e-5, err_msg=path)


def test_clipping_bounds_row_norms():
    keras.utils.set_random_seed(0)
    bottom = bottom_model("p", [4, 3], 1, CFG, clip_norm=0.01)
    h = bottom(list(_batch()["label"]))
    assert h.shape == (16, CFG.cut_dim)
    assert float(tf.reduce_max(tf.norm(h, axis=1))) <= 0.01 + 1e-6


@pytest.mark.parametrize("layer", [
    Bottom([4, 3], 2, 3, [8], 4, clip_norm=1.5, name="b"),
    MMoE(2, 3, 5, 2, name="m"),
    TaskWeighting([1.0, 0.5], learned=True, name="w"),
], ids=["bottom", "mmoe", "task-weighting"])
def test_serialization(layer):
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert restored.get_config() == layer.get_config()


def test_task_weighting():
    per_task = tf.constant([0.2, 0.8])
    static = TaskWeighting([1.0, 0.5])
    learned = TaskWeighting([1.0, 0.5], learned=True)
    assert float(static(per_task)) == pytest.approx(0.2 + 0.4)
    assert float(learned(per_task)) == pytest.approx(0.2 + 0.4)  # s_t starts at 0
    assert static.trainable_variables == [] and len(learned.trainable_variables) == 1
    learned.log_vars.assign([np.log(2.0), 0.0])
    # w * (exp(-s) L + s): 1 * (0.1 + log 2) + 0.5 * 0.8
    assert float(learned(per_task)) == pytest.approx(0.1 + np.log(2.0) + 0.4, rel=1e-6)
    np.testing.assert_allclose(learned.effective_weights(), [0.5, 0.5], rtol=1e-6)


def test_model_saving(models, tmp_path: Path):
    bottoms, top = models
    x = _batch(5)
    path = tmp_path / "bottom.keras"
    bottoms["bank"].save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_allclose(restored(list(x["bank"])), bottoms["bank"](list(x["bank"])))
