"""Tests cannot drift: pinned, two runs from the same raw files train bit-identically.

Without the test entropy pinned, the PSI order is fresh on every run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO

TRAIN_FROM_SCRATCH = """
import hashlib, json, sys
from pathlib import Path
from splitrec_core.config import load_config
from splitrec_core.evaluate import evaluate
from splitrec_core.training.central import train_central
from splitrec_core.training.local import train_split_local
from tests.conftest import SYNTHETIC_TOML, prepare_features

run = Path(sys.argv[1])
cfg = load_config(SYNTHETIC_TOML)
features = prepare_features(cfg, run)  # validate, PSI (shuffles), features
tasks = cfg.task_names
modes = {  # noise from both sides; and pipelined with XLA
    "noised": {"privacy": {"clip_norm": 1.0, "embedding_noise": 0.05, "gradient_noise": 0.01}},
    "pipelined_xla": {"training": {"embed_ahead": 1, "xla": True}},
}
out = {}
for mode, change in modes.items():
    variant = cfg.model_copy(update={section: getattr(cfg, section).model_copy(update=values)
                                     for section, values in change.items()})
    split = train_split_local(variant, features, {p: run / mode / p for p in features})
    out[mode] = {"predictions": hashlib.sha256(split.predictions.read_bytes()).hexdigest(),
                 "history": json.loads(split.history.read_text())["val_auc"],
                 "auc": evaluate(split.predictions, features["advertiser"].test, tasks),
                 "leakage": split.leakage, "epochs": [split.epochs_run, split.best_epoch]}
central = train_central(cfg, features, run / "central")
out["central"] = hashlib.sha256(central.predictions.read_bytes()).hexdigest()
print(json.dumps(out))
"""


def _train_in_a_fresh_process(workdir: Path) -> subprocess.Popen:
    from splitrec_core.datasets.synthetic import write_parties

    write_parties(workdir / "data", 2000, seed=9)
    return subprocess.Popen([sys.executable, "-c", TRAIN_FROM_SCRATCH, str(workdir)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.splitlines()[-1])


def test_two_runs_from_scratch_give_identical_training_results(tmp_path: Path):
    # Execute: PSI, features and training (noised; pipelined with XLA; central) twice, each in a
    # process of its own, as two runs of the test suite are (at the same time: sharing the cores
    # must not change a bit either)
    runs = [_train_in_a_fresh_process(tmp_path / name) for name in ("first", "second")]
    first, second = (_result(run) for run in runs)

    # Assert: every figure equal, to the last bit of every prediction
    assert first == second


def _common_order(workdir: Path) -> list[int]:
    from splitrec_core.config import load_config
    from splitrec_core.datasets.synthetic import write_parties
    from tests.conftest import SYNTHETIC_TOML, prepare_features

    write_parties(workdir / "data", 300, seed=2)
    prepare_features(load_config(SYNTHETIC_TOML), workdir)
    aligned = workdir / "parties" / "advertiser" / "aligned.parquet"
    return pq.read_table(aligned).column("row").to_pylist()


def test_psi_orders_are_fresh_unless_a_test_pins_them(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch):
    # Execute: twice pinned to one value, once to another, twice as a real party runs (unpinned)
    from splitrec_core.privacy.entropy import PIN_VARIABLE, pinned

    assert os.environ[PIN_VARIABLE]  # the test session pins it
    with pinned("one"):
        pinned_twice = [_common_order(tmp_path / "a"), _common_order(tmp_path / "b")]
    with pinned("two"):
        pinned_otherwise = _common_order(tmp_path / "c")
    monkeypatch.delenv(PIN_VARIABLE)
    fresh = [_common_order(tmp_path / "d"), _common_order(tmp_path / "e")]

    # Assert
    assert pinned_twice[0] == pinned_twice[1]
    assert pinned_otherwise != pinned_twice[0]
    assert fresh[0] != fresh[1] and pinned_twice[0] not in fresh
    assert sorted(fresh[0]) == sorted(pinned_twice[0])  # the same people, in another order
