"""Export a trained split model per party (SavedModel + transform + manifest) and load it again.

Each party's folder holds only what that party needs to serve: its bottom as a TensorFlow
SavedModel, its fitted `transform.json` and a `manifest.json` naming its input columns. The label
party's folder also holds the MMoE top, which takes every party's h_p in the manifest's order.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

import splitrec_core.model  # noqa: F401  (registers the custom layers for keras.models.load_model)
from splitrec_core.config import Config
from splitrec_core.features import Transform
from splitrec_core.io import atomic_path, read_json, write_json


def export_party(cfg: Config, party: str, bottom: Path, transform: Path, out: Path,
                 top: Path | None = None) -> Path:
    """Write `out/`: the `bottom/` SavedModel, `transform.json` and `manifest.json`.

    The `top/` SavedModel goes there too, if given.
    """
    spec = cfg.party(party)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        keras.models.load_model(bottom).export(tmp / "bottom", verbose=False)
        shutil.copyfile(transform, tmp / "transform.json")
        manifest: dict[str, object] = {
            "party": party,
            "role": "label" if party == cfg.label_party else "feature",
            "id_column": spec.id_column,
            "events": spec.events,
            "inputs": {"categorical": spec.categorical, "numeric": spec.numeric},
            "bottom": {"path": "bottom", "signature": "serve", "args": ["cats int32 [n, n_cat]",
                                                                         "nums float32 [n, n_num]"],
                       "output": f"h float32 [n, {cfg.model.cut_dim}]"},
            "transform": "transform.json",
        }
        if top is not None:
            keras.models.load_model(top).export(tmp / "top", verbose=False)
            manifest["top"] = {
                "path": "top", "signature": "serve",
                "parties": cfg.order,
                "tasks": cfg.task_names, "output": "logits float32 [n, num_tasks]",
            }
        write_json(manifest, tmp / "manifest.json")
    return out


class Servable(Protocol):
    """A loaded SavedModel, as far as serving uses it (TensorFlow ships no type hints)."""

    def serve(self, inputs: list[Any]) -> Any:
        """Its `serve` signature: the output tensor for the input tensors."""


@dataclass
class ExportedParty:
    """One party's export, loaded in this process."""

    manifest: dict[str, Any]
    transform: Transform
    bottom: Servable
    top: Servable | None

    @staticmethod
    def manifest_of(folder: Path) -> dict[str, Any]:
        """An export's `manifest.json` (its columns and, at the label party, the top's inputs)."""
        return read_json(folder / "manifest.json")

    @classmethod
    def load(cls, folder: Path) -> ExportedParty:
        """Load an export folder written by `export_party`."""
        manifest = cls.manifest_of(folder)
        top = tf.saved_model.load(str(folder / "top")) if "top" in manifest else None
        return cls(manifest, Transform.load(folder / "transform.json"),
                   tf.saved_model.load(str(folder / "bottom")), top)

    def embed(self, rows: pd.DataFrame) -> np.ndarray:
        """h_p for raw rows (typed as `validate` types them)."""
        cats, nums = self.transform.apply(rows)
        return self.bottom.serve([tf.constant(cats), tf.constant(nums)]).numpy()

    def top_widths(self) -> list[int]:
        """At the label party: the width of each party's h the top takes, in the top's order.

        A party's width is the cut's, or 0 for a label party with no feature columns.
        """
        assert self.top is not None  # only the label party's export has the top
        serve: Any = self.top.serve  # a tf.function: its input signature holds the widths
        (inputs,) = serve.input_signature
        return [int(spec.shape[1]) for spec in inputs]

    def predict(self, hs: list[np.ndarray]) -> np.ndarray:
        """At the label party: probabilities `[n, tasks]` from every party's h.

        The hs come in the top's party order.
        """
        assert self.top is not None  # only the label party predicts, and its export has the top
        return tf.sigmoid(self.top.serve([tf.constant(h) for h in hs])).numpy()

