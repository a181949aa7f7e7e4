"""The run report's plots."""

from __future__ import annotations

import numpy as np

from splitrec_core.report import _plots


def test_scores_that_barely_vary_still_plot():
    # Prepare: a task whose test scores span one float32 step (a model that learned almost
    # nothing for it), as the scale benchmark's two-party run at 1M people produced
    flat = np.full(1000, 0.3, np.float32)
    flat[0] = np.nextafter(flat[0], np.float32(1))
    history = {"task_loss": {"a": [0.6, 0.5], "b": [0.7, 0.69]},
               "val_auc": {"a": [0.8, 0.9], "b": [0.5, 0.5]}, "best_epoch": 2,
               "gate_mean": {"a": [[0.5, 0.5], [0.6, 0.4]], "b": [[0.5, 0.5], [0.5, 0.5]]}}

    # Execute
    plots = _plots(history, {"a": np.linspace(0, 1, 1000, dtype=np.float32), "b": flat})

    # Assert: three PNGs, the score distributions among them
    assert len(plots) == 3
    assert all(p.startswith("![plot](data:image/png;base64,") for p in plots)
