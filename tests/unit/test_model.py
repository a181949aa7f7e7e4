"""The split model: layers serialise, and split training equals the composed model (MMoE, PLE)."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from splitrec_core.config import ModelConfig
from splitrec_core.model import (
    PLE,
    Bottom,
    MMoE,
    TaskWeighting,
    bottom_model,
    mean_gate_weights,
    task_losses,
    top_model,
)
from splitrec_core.training.steps import BottomTrainer, CentralTrainer, LabelTrainer, StepSettings

CFG = ModelConfig(embedding_dim=3, bottom_units=[8], cut_dim=4, num_experts=3, expert_units=5,
                  tower_units=2)
CFG_PLE = ModelConfig(kind="ple", embedding_dim=3, bottom_units=[8], cut_dim=4, num_experts=3,
                      expert_units=5, tower_units=2, task_experts=2, levels=2)
KINDS = pytest.mark.parametrize("cfg", [CFG, CFG_PLE], ids=["mmoe", "ple"])
PARTIES = {"label": ([4, 3], 1), "bank": ([5], 2), "media": ([], 3)}  # vocab sizes, numerics


def _batch(n: int = 16, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {
        name: (np.stack([rng.integers(0, v, n) for v in vocab], axis=1).astype(np.int32)
               if vocab else np.zeros((n, 0), np.int32),
               rng.normal(size=(n, nums)).astype(np.float32))
        for name, (vocab, nums) in PARTIES.items()
    }


def _fresh_models(cfg: ModelConfig = CFG) -> tuple[dict[str, keras.Model], keras.Model]:
    keras.utils.set_random_seed(1)
    bottoms = {name: bottom_model(name, vocab, nums, cfg)
               for name, (vocab, nums) in PARTIES.items()}
    return bottoms, top_model(list(PARTIES), 2, cfg)


@pytest.fixture
def models():
    return _fresh_models()


def test_columns_use_their_own_rows_of_the_shared_table(models):
    # Column j's index i reads row offset_j + i of the one embedding table
    bottom = models[0]["label"].get_layer("bottom")
    table = bottom.embedding.embeddings.numpy()
    cats = np.array([[3, 2]], np.int32)
    looked_up = bottom.embedding(cats + np.array(bottom.offsets, np.int32)).numpy()
    np.testing.assert_array_equal(looked_up[0], table[[3, 4 + 2]])


@KINDS
def test_shapes(cfg):
    # Prepare: a PLE task gate weighs the task's own experts and the shared ones
    bottoms, top = _fresh_models(cfg)
    experts = cfg.num_experts + (cfg.task_experts if cfg.kind == "ple" else 0)
    x = _batch(7)

    # Execute
    hs = [bottoms[p](list(x[p])) for p in PARTIES]
    gates = top.get_layer(cfg.kind).gate_weights(tf.concat(hs, axis=1))

    # Assert
    assert all(h.shape == (7, CFG.cut_dim) for h in hs)
    assert top(hs).shape == (7, 2)
    assert gates.shape == (2, 7, experts)
    np.testing.assert_allclose(tf.reduce_sum(gates, axis=-1), np.ones((2, 7)), rtol=1e-5)
    assert mean_gate_weights(top, hs).shape == (2, experts)


def test_ple_builds_every_level_before_its_first_call():
    # Prepare: 2 levels of 2 tasks: per level a group of own experts and a gate per task, and
    # the shared experts; a shared gate on the first level only; a tower and head per task
    ple = PLE(2, 3, 5, 2, task_experts=2, levels=2)

    # Execute
    ple.build((None, 12))

    # Assert: a kernel and a bias per Dense, with the widths of their level
    assert len(ple.weights) == 2 * (2 * (2 + 2 + 1) + 1 + 2 + 2)
    assert ple.own_experts[0].kernel.shape == (12, 2 * 5)
    assert ple.own_experts[2].kernel.shape == (5, 2 * 5)
    assert ple.shared_gates[0].kernel.shape == (12, 2 * 2 + 3)
    assert ple.task_gates[3].kernel.shape == (5, 2 + 3)


# PLE only in graph mode: XLA is the trainers' concern, the same for either top, and compiling
# PLE's levels costs more than the rest of this file
@pytest.mark.parametrize("fused", [False, True], ids=["two_calls", "fused"])
@pytest.mark.parametrize(("cfg", "xla"), [(CFG, False), (CFG, True), (CFG_PLE, False)],
                         ids=["mmoe-graph", "mmoe-xla", "ple-graph"])
def test_split_steps_equal_one_central_step(cfg, xla, fused):
    # Prepare: two identical copies of the model (the second's weights copied from the first: a
    # seed alone does not make them equal while other threads draw from the global generators,
    # as a Prefect client's retry jitter does), one batch
    split_bottoms, split_top = _fresh_models(cfg)
    central_bottoms, central_top = _fresh_models(cfg)
    for name, bottom in split_bottoms.items():
        central_bottoms[name].set_weights(bottom.get_weights())
    central_top.set_weights(split_top.get_weights())
    x = _batch()
    labels = tf.constant(np.random.default_rng(2).integers(0, 2, (16, 2)), tf.float32)
    weighting = TaskWeighting([1.0, 0.5])

    # Execute: one Adam step of the composed model on the weighted loss, as central training
    # takes it (traced, and with XLA compiled on zeros first, which must leave no trace either)
    pooled = CentralTrainer(central_bottoms, central_top, weighting, 0.01, xla)
    pooled.trace(batch_sizes=[16, 5])
    loss = weighting(pooled.step([m for p in PARTIES for m in x[p]], labels))

    # Execute: the same step as the parties take it: each feature party's bottom embeds its own
    # columns, the label party returns dL/dh and steps its bottom and the top, each feature
    # party's bottom steps on its own gradient
    label, *followers = PARTIES
    steps = StepSettings(0.01, xla=xla)
    bottoms = {p: BottomTrainer(split_bottoms[p], steps) for p in followers}
    labeller = LabelTrainer(split_bottoms[label], split_top, weighting, steps, fused=fused)
    for trainer in (labeller, *bottoms.values()):
        # as training calls them: traced once, on fixed signatures; with XLA also compiled by
        # taking each step on zeros, which must leave no trace in the weights or the optimizer
        trainer.trace(batch_sizes=[16, 5])
    hs = [bottoms[p].forward(*x[p]) for p in followers]
    grads = []
    per_task = labeller.train_batch(*x[label], hs, labels, grads.extend)
    for party, grad in zip(followers, grads, strict=True):
        bottoms[party].backward(*x[party], grad)

    # Assert: same loss, same weights afterwards
    np.testing.assert_allclose(float(weighting(per_task)), float(loss), rtol=1e-6)
    for party in PARTIES:
        for a, b in zip(split_bottoms[party].get_weights(), central_bottoms[party].get_weights(),
                        strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)
    for a, b in zip(split_top.get_weights(), central_top.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_clipping_bounds_row_norms():
    keras.utils.set_random_seed(0)
    bottom = bottom_model("p", [4, 3], 1, CFG, clip_norm=0.01)
    h = bottom(list(_batch()["label"]))
    assert h.shape == (16, CFG.cut_dim)
    assert float(tf.reduce_max(tf.norm(h, axis=1))) <= 0.01 + 1e-6


@pytest.mark.parametrize("layer", [
    Bottom([4, 3], 2, 3, [8], 4, clip_norm=1.5, name="b"),
    MMoE(2, 3, 5, 2, name="m"),
    PLE(2, 3, 5, 2, task_experts=1, levels=3, name="p"),
    TaskWeighting([1.0, 0.5], learned=True, name="w"),
], ids=["bottom", "mmoe", "ple", "task-weighting"])
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


@KINDS
def test_top_saving(cfg, tmp_path: Path):
    # Prepare: a top and the embeddings it reads
    bottoms, top = _fresh_models(cfg)
    x = _batch(5)
    hs = [bottoms[p](list(x[p])) for p in PARTIES]

    # Execute
    path = tmp_path / "top.keras"
    top.save(path)
    restored = keras.models.load_model(path)

    # Assert: same logits, and the layer keeps its kind's name
    np.testing.assert_array_equal(restored(hs), top(hs))
    assert type(restored.get_layer(cfg.kind)) is type(top.get_layer(cfg.kind))


def test_ple_top_learns():
    # Prepare: two tasks the embeddings decide (the sign of one coordinate, and of a sum), and a
    # PLE wider than CFG_PLE's, whose 2-unit towers can die under Adam and stall
    keras.utils.set_random_seed(0)
    cfg = ModelConfig(kind="ple", cut_dim=4, num_experts=3, expert_units=8, tower_units=8)
    top = top_model(["a", "b"], 2, cfg)
    rng = np.random.default_rng(0)
    hs = [tf.constant(rng.normal(size=(64, cfg.cut_dim)), tf.float32) for _ in range(2)]
    labels = tf.stack([tf.cast(hs[0][:, 0] > 0, tf.float32),
                       tf.cast(tf.reduce_sum(hs[1], axis=1) > 0, tf.float32)], axis=1)
    optimizer = keras.optimizers.Adam(0.01)

    @tf.function
    def step() -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(task_losses(labels, top(hs)))
        optimizer.apply(tape.gradient(loss, top.trainable_variables), top.trainable_variables)
        return loss

    # Execute: full-batch Adam steps
    losses = [float(step()) for _ in range(100)]

    # Assert: the loss of both tasks together has fallen to a small part of its start
    assert losses[-1] < 0.1 * losses[0]
