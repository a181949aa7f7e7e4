"""One party's bottom: embeddings of its categorical columns, its numeric ones, hidden layers.

Its output h_p, `cut_dim` numbers per row, is what crosses the cut to the label party.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from splitrec_core.config import ModelConfig


@keras.saving.register_keras_serializable(package="splitrec")
class Bottom(keras.layers.Layer):
    """One party's network over its own columns.

    Args:
        vocab_sizes: embedding table size per categorical column (index 0 = unknown).
        num_numeric: number of numeric columns.
        embedding_dim: width of each categorical embedding.
        units: hidden layer widths.
        cut_dim: width of the output h_p that crosses the cut.
        clip_norm: if > 0, each row of h_p is scaled to L2 norm at most this (bounds what one
            person's embedding can carry, the precondition for calibrated noise).
        **kwargs: Args to pass to the base class.

    Call args: `[cats int32 [batch, n_cat], nums float32 [batch, n_num]]`; returns
    `[batch, cut_dim]`.
    """

    def __init__(
        self, vocab_sizes: Sequence[int], num_numeric: int, embedding_dim: int,
        units: Sequence[int], cut_dim: int, clip_norm: float = 0.0, **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.vocab_sizes = list(vocab_sizes)
        self.num_numeric = num_numeric
        self.embedding_dim = embedding_dim
        self.units = list(units)
        self.cut_dim = cut_dim
        self.clip_norm = clip_norm
        # All categorical columns share one table at per-column offsets: one gather per batch
        # instead of one per column (the bottom runs twice per step in split training).
        self.offsets = [sum(self.vocab_sizes[:j]) for j in range(len(self.vocab_sizes))]
        self.embedding = (keras.layers.Embedding(sum(self.vocab_sizes), embedding_dim,
                                                 name="embedding")
                          if self.vocab_sizes else None)
        self.hidden = [keras.layers.Dense(u, activation="relu", name=f"hidden_{j}")
                       for j, u in enumerate(self.units)]
        self.cut = keras.layers.Dense(cut_dim, activation="relu", name="cut")

    def build(self, input_shape: object) -> None:
        """Build sublayers for the concatenated input width."""
        width = len(self.vocab_sizes) * self.embedding_dim + self.num_numeric
        if self.embedding is not None:
            self.embedding.build((None, len(self.vocab_sizes)))
        for layer in self.hidden:
            layer.build((None, width))
            width = layer.units
        self.cut.build((None, width))

    def call(self, inputs: Sequence[tf.Tensor]) -> tf.Tensor:
        """Embed, concatenate and run the MLP."""
        cats, nums = inputs
        parts = []
        if self.embedding is not None:
            embedded = self.embedding(cats + keras.ops.convert_to_tensor(self.offsets, "int32"))
            parts.append(keras.ops.reshape(embedded,
                                           (-1, len(self.vocab_sizes) * self.embedding_dim)))
        if self.num_numeric:
            parts.append(nums)
        x = keras.ops.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
        for layer in self.hidden:
            x = layer(x)
        h = self.cut(x)
        if self.clip_norm > 0:
            norm = keras.ops.sqrt(keras.ops.sum(h * h, axis=-1, keepdims=True) + 1e-12)
            h = h * keras.ops.minimum(1.0, self.clip_norm / norm)
        return h

    def get_config(self) -> dict[str, object]:
        """Return the constructor arguments."""
        return {**super().get_config(), "vocab_sizes": self.vocab_sizes,
                "num_numeric": self.num_numeric, "embedding_dim": self.embedding_dim,
                "units": self.units, "cut_dim": self.cut_dim, "clip_norm": self.clip_norm}


def bottom_model(name: str, vocab_sizes: Sequence[int], num_numeric: int,
                 cfg: ModelConfig, clip_norm: float = 0.0) -> keras.Model:
    """A party's bottom as a Keras model with inputs `cats` and `nums`.

    A label party with no feature columns of its own gets an empty bottom: its h has width 0
    and no weights, so the top sees the feature parties' embeddings alone.
    """
    cats = keras.Input((len(vocab_sizes),), dtype="int32", name="cats")
    nums = keras.Input((num_numeric,), dtype="float32", name="nums")
    if not vocab_sizes and not num_numeric:
        return keras.Model([cats, nums], nums, name=f"bottom_{name}")  # nums is [batch, 0]
    h = Bottom(vocab_sizes, num_numeric, cfg.embedding_dim, cfg.bottom_units, cfg.cut_dim,
               clip_norm, name="bottom")([cats, nums])
    return keras.Model([cats, nums], h, name=f"bottom_{name}")
