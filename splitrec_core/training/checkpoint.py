"""Per-epoch, per-party checkpoints, so a retried training run resumes instead of starting over.

Each party saves its own model weights and optimizer state after every epoch, in its own
workspace, under a fingerprint of the run's inputs: a retry with the same inputs resumes, a run
with changed inputs starts afresh. A checkpoint is one `.npz`, written atomically.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import keras
import numpy as np

from splitrec_core.io import atomic_path

_NAME = re.compile(r"epoch-(\d+)\.npz")


class Checkpoints:
    """One party's checkpoints for one fingerprint: `folder/epoch-<k>.npz`, k = epochs done."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def completed(self) -> list[int]:
        """Epoch counts that have a checkpoint, ascending."""
        if not self.folder.exists():
            return []
        return sorted(int(m.group(1)) for p in self.folder.iterdir()
                      if (m := _NAME.fullmatch(p.name)))

    def save(self, epochs_done: int, models: list[keras.Layer],
             optimizers: list[keras.optimizers.Optimizer],
             extra: dict[str, np.ndarray] | None = None) -> Path:
        """Write the weights of `models`, the state of `optimizers` and `extra` arrays."""
        arrays = {f"w{i}": w for i, w in enumerate(w for m in models for w in m.get_weights())}
        arrays |= {f"o{i}": v.numpy() for i, v in enumerate(_state(optimizers))}
        arrays |= {f"x_{k}": v for k, v in (extra or {}).items()}
        path = self.folder / f"epoch-{epochs_done}.npz"
        with atomic_path(path) as tmp:
            with tmp.open("wb") as handle:
                np.savez(handle, **arrays)
        for older in self.completed():
            if older < epochs_done - 1:  # keep two, so parties can agree on a common epoch
                (self.folder / f"epoch-{older}.npz").unlink(missing_ok=True)
        return path

    def restore(self, epochs_done: int, models: list[keras.Layer],
                optimizers: list[keras.optimizers.Optimizer]) -> dict[str, np.ndarray]:
        """Load the checkpoint after `epochs_done` epochs into `models` and (built) `optimizers`.

        Returns the `extra` arrays saved with it.
        """
        with np.load(self.folder / f"epoch-{epochs_done}.npz") as data:
            weights = [data[f"w{i}"]
                       for i in range(sum(1 for k in data.files if k.startswith("w")))]
            start = 0
            for model in models:
                count = len(model.get_weights())
                model.set_weights(weights[start : start + count])
                start += count
            for i, variable in enumerate(_state(optimizers)):
                variable.assign(data[f"o{i}"])
            return {k[2:]: data[k] for k in data.files if k.startswith("x_")}

    def clear(self) -> None:
        """Drop the checkpoints once the run has finished."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _state(optimizers: list[keras.optimizers.Optimizer]) -> list[keras.Variable]:
    return [v for optimizer in optimizers for v in optimizer.variables]

