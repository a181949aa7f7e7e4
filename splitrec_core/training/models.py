"""The models every party builds identically from the shared settings: seeded, in one order.

Each model's initial weights come from the shared seed and the model's name, so a party builds
its part alone and identically to how central training builds it.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Collection

import keras

from splitrec_core.config import Config
from splitrec_core.features import Transform
from splitrec_core.model import TaskWeighting, bottom_model, top_model

_SEEDING = threading.Lock()  # Keras' seed is process-wide: parties on threads build in turn


def _model_seed(seed: int, model: str) -> int:
    """Each model's own initialisation seed: a party builds its part alone, and identically."""
    return (seed * 1_000_003 + zlib.crc32(model.encode())) % 2**31


def party_order(cfg: Config, present: Collection[str]) -> list[str]:
    """The parties in `present`, label party first: the order of the top's inputs."""
    return [p for p in cfg.order if p in present]


def build_bottom(cfg: Config, party: str, transform: Transform) -> keras.Model:
    """`party`'s bottom, seeded from the shared seed and its name."""
    with _SEEDING:
        keras.utils.set_random_seed(_model_seed(cfg.training.seed, party))
        return bottom_model(party, transform.vocab_sizes(), len(transform.numeric), cfg.model,
                            cfg.privacy.clip_norm)


def build_top(cfg: Config, parties: list[str]) -> keras.Model:
    """The MMoE top over `parties`' embeddings, seeded from the shared seed.

    A label party without feature columns adds an empty embedding.
    """
    empty = [] if cfg.label.feature_columns else [cfg.label_party]
    with _SEEDING:
        keras.utils.set_random_seed(_model_seed(cfg.training.seed, "top"))
        return top_model(parties, len(cfg.tasks), cfg.model, empty)


def task_weighting(cfg: Config) -> TaskWeighting:
    """The configured combination of the task losses (static, or learned by uncertainty)."""
    learned = cfg.training.loss_weighting == "uncertainty"
    return TaskWeighting([t.weight for t in cfg.tasks], learned, name="task_weighting")
