"""The models training and export use: the label party's top, and the centralised twin."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from splitrec_core.config import ModelConfig
from splitrec_core.model.mmoe import MMoE
from splitrec_core.model.ple import PLE


def top_model(parties: Sequence[str], num_tasks: int, cfg: ModelConfig,
              empty: Sequence[str] = ()) -> keras.Model:
    """The label party's MMoE or PLE (`cfg.kind`) over every party's h_p (in `parties` order).

    Outputs logits. The parties in `empty` have no columns: their h has width 0. The layer is
    named after its kind ("mmoe" as models saved before PLE have it).
    """
    hs = [keras.Input((0 if p in empty else cfg.cut_dim,), dtype="float32", name=f"h_{p}")
          for p in parties]
    x = keras.ops.concatenate(hs, axis=-1) if len(hs) > 1 else hs[0]
    mixer: MMoE | PLE
    if cfg.kind == "ple":
        mixer = PLE(num_tasks, cfg.num_experts, cfg.expert_units, cfg.tower_units,
                    cfg.task_experts, cfg.levels, name="ple")
    else:
        mixer = MMoE(num_tasks, cfg.num_experts, cfg.expert_units, cfg.tower_units, name="mmoe")
    return keras.Model(hs, mixer(x), name="top")


def composed_model(bottoms: dict[str, keras.Model], top: keras.Model,
                   spread: bool = False) -> keras.Model:
    """Bottoms and top wired into one model, sharing their weights: the centralised twin.

    Its inputs are `[cats, nums]` per party. With `spread`, the first party's rows are events
    (a label party that holds events), every other party's rows are people, and a last input
    gives each event's person: the others' embeddings are gathered to the events, as split
    training spreads them (`splitrec_core.training.event_matrix`), so both take the same steps.
    """
    inputs, hs = [], []
    for name, bottom in bottoms.items():
        cats = keras.Input(bottom.inputs[0].shape[1:], dtype="int32", name=f"{name}_cats")
        nums = keras.Input(bottom.inputs[1].shape[1:], dtype="float32", name=f"{name}_nums")
        inputs += [cats, nums]
        hs.append(bottom([cats, nums]))
    if spread:
        person = keras.Input((), dtype="int32", name="person")
        inputs.append(person)
        hs = [hs[0], *(keras.ops.take(h, person, axis=0) for h in hs[1:])]
    return keras.Model(inputs, top(hs), name="central")


def mean_gate_weights(top: keras.Model, hs: Sequence[tf.Tensor]) -> tf.Tensor:
    """Each task's mean gate weight per expert on these rows, `[num_tasks, experts]`.

    For PLE, the last level's gates: experts are the task's own, then the shared ones.
    """
    x = keras.ops.concatenate(list(hs), axis=-1) if len(hs) > 1 else hs[0]
    mixer = next(layer for layer in top.layers if isinstance(layer, MMoE | PLE))
    return keras.ops.mean(mixer.gate_weights(x), axis=1)
