"""Training killed after epoch k resumes at epoch k+1, ending with an unbroken run's weights."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np

from splitrec_core.config import Config, load_config
from splitrec_core.datasets.synthetic import write_parties
from splitrec_core.evaluate import evaluate
from splitrec_core.features import PartyFeatures
from splitrec_core.training.checkpoint import Checkpoints
from splitrec_core.training.local import train_split_local
from splitrec_core.training.party import PartyJob
from tests.conftest import (
    REPO,
    SYNTHETIC_TOML,
    prepare_features,
    train_over_a_long_link,
    with_training,
)

EPOCHS = 8
TRAIN_IN_CHILD = """
import json, sys
from pathlib import Path
from splitrec_core.config import load_config
from splitrec_core.features import PartyFeatures
from splitrec_core.training.local import train_split_local
from tests.conftest import train_over_a_long_link
args = json.loads(sys.argv[1])
cfg = load_config(Path(args["config"]))
training = cfg.training.model_copy(update=args["training"])
cfg = cfg.model_copy(update={"training": training})
features = {p: PartyFeatures(*map(Path, f)) for p, f in args["features"].items()}
out = {p: Path(d) for p, d in args["out"].items()}
(train_over_a_long_link if training.local_updates else train_split_local)(cfg, features, out)
"""


def _common_epoch(parties: list[Checkpoints], limit: int) -> int:
    """The latest epoch, at most `limit`, that every party has a checkpoint of (0 = none)."""
    shared = set.intersection(*(set(p.completed()) for p in parties))
    return max((k for k in shared if k <= limit), default=0)


def _weights(out: dict[str, Path]) -> list[np.ndarray]:
    models = [out[p] / "bottom.keras" for p in sorted(out)] + [out["advertiser"] / "top.keras"]
    return [w for m in models for w in keras.models.load_model(m).get_weights()]


def _killed_after_epoch_2(cfg: Config, features: dict[str, PartyFeatures],
                          out: dict[str, Path]) -> int:
    """Train in a child process, SIGKILL it once every party has finished epoch 2.

    Returns the latest epoch every party had checkpointed (short of the last).
    """
    epochs = cfg.training.epochs
    checkpoints = [PartyJob(p, cfg, features[p], out[p]).checkpoints for p in features]
    child = subprocess.Popen(
        [sys.executable, "-c", TRAIN_IN_CHILD, json.dumps({
            "config": str(SYNTHETIC_TOML), "training": cfg.training.model_dump(mode="json"),
            "features": {p: [str(v) for v in f.paths] for p, f in features.items()},
            "out": {p: str(d) for p, d in out.items()}})],
        cwd=REPO)
    deadline = time.monotonic() + 600  # a hang guard: the wait ends at epoch 2
    while _common_epoch(checkpoints, epochs) < 2 and time.monotonic() < deadline:
        assert child.poll() is None, "training finished before it could be killed"
        time.sleep(0.01)
    child.kill()
    child.wait()
    return _common_epoch(checkpoints, epochs - 1)


def test_killed_training_resumes_at_the_next_epoch(tmp_path: Path):
    # Prepare: features, and the config with enough epochs to kill one run part-way
    write_parties(tmp_path / "data", 3000, seed=4)
    cfg = with_training(load_config(SYNTHETIC_TOML), epochs=EPOCHS)
    features = prepare_features(cfg, tmp_path)
    unbroken = {p: tmp_path / "unbroken" / p for p in features}
    broken = {p: tmp_path / "broken" / p for p in features}
    checkpoints = [PartyJob(p, cfg, features[p], broken[p]).checkpoints for p in features]

    # Execute: an unbroken run; a run killed (SIGKILL) once every party has finished epoch 2
    whole = train_split_local(cfg, features, unbroken)
    killed_after = _killed_after_epoch_2(cfg, features, broken)
    resumed = train_split_local(cfg, features, broken)

    # Assert
    assert 2 <= killed_after < whole.epochs_run
    assert resumed.resumed_after_epoch == killed_after
    assert (resumed.epochs_run, resumed.best_epoch) == (whole.epochs_run, whole.best_epoch)
    history = json.loads(resumed.history.read_text())
    assert history["val_auc"] == json.loads(whole.history.read_text())["val_auc"]
    for a, b in zip(_weights(unbroken), _weights(broken), strict=True):
        np.testing.assert_array_equal(a, b)
    assert all(c.completed() == [] for c in checkpoints), "checkpoints are cleared at the end"


def test_killed_training_with_local_updates_resumes_at_the_next_epoch(tmp_path: Path):
    # Local updates depend on when messages arrive, so no two runs are equal: the resumed run
    # must go on from the common epoch, step locally again, and learn
    write_parties(tmp_path / "data", 3000, seed=4)
    cfg = with_training(load_config(SYNTHETIC_TOML), epochs=4, patience=4, local_updates=True)
    features = prepare_features(cfg, tmp_path)
    out = {p: tmp_path / p for p in features}

    killed_after = _killed_after_epoch_2(cfg, features, out)
    resumed = train_over_a_long_link(cfg, features, out)

    assert 2 <= killed_after < 4
    assert resumed.resumed_after_epoch == killed_after
    assert resumed.epochs_run == 4
    steps = json.loads(resumed.history.read_text())["local_steps"]
    assert sum(steps[killed_after:]) > 0  # after the resume too
    metrics = evaluate(resumed.predictions, features[cfg.label_party].test, cfg.task_names)
    assert all(m["auc"] > 0.75 for m in metrics.values())
