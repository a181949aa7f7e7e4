"""Training from features streamed a row group at a time (`training.stream_buffer` > 0).

Every fitting row comes once an epoch, in an order every party draws alike from the shared seed,
with memory for a few row groups; and split training on it still learns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from splitrec_core.config import TrainingConfig, load_config
from splitrec_core.evaluate import evaluate
from splitrec_core.features import FeatureMatrix
from splitrec_core.training.epochs import Plan
from splitrec_core.training.streaming import StreamedFeatures
from tests.conftest import SYNTHETIC_TOML, prepare_features, with_training, write_parties


def test_an_epoch_streams_every_fitting_row_once_in_the_seeded_order(tmp_path: Path):
    # Prepare: 2,500 rows in row groups of 400 whose numeric column is the row's index
    n, path = 2500, tmp_path / "train.parquet"
    rows = np.arange(n)
    pq.write_table(pa.table({"position": rows, "cat:c": (rows % 7).astype(np.int32),
                             "num:row": rows.astype(np.float32),
                             "label:t": (rows % 2).astype(np.int8)}), path, row_group_size=400)
    plan = Plan.of(TrainingConfig(batch_size=128, seed=3, validation_fraction=0.1), n)
    streamed = StreamedFeatures(path, buffer_groups=2)

    def epoch(number: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        batches = list(streamed.batches(plan, number, ["t"]))
        return ([b[1].numpy()[:, 0].astype(int) for b in batches],
                [b[2].numpy()[:, 0].astype(int) for b in batches])

    # Execute
    (first, labels), (again, _), (second, _) = epoch(0), epoch(0), epoch(1)

    # Assert: the fitting rows once each, in batches of the in-memory sizes, labels with them;
    # the same order again, another next epoch; the first 640 rows come from one buffer
    full, rest = divmod(len(plan.fit), 128)
    assert [len(b) for b in first] == [128] * full + [rest]
    assert sorted(np.concatenate(first).tolist()) == plan.fit.tolist()
    assert [b.tolist() for b in first] == [b.tolist() for b in again]
    assert np.concatenate(first).tolist() != np.concatenate(second).tolist()
    assert all((b % 2 == lab).all() for b, lab in zip(first, labels, strict=True))
    assert len({row // 400 for row in np.concatenate(first[:5])}) <= 2
    # the validation rows and the scoring chunks are those of the file read whole
    whole = FeatureMatrix.read(path)
    np.testing.assert_array_equal(streamed.take(plan.validation).nums,
                                  whole.take(plan.validation).nums)
    assert ([c.nums[0, 0] for c in streamed.chunks(1000)] == [0, 1000, 2000]
            == [c.nums[0, 0] for c in whole.chunks(1000)])


def test_split_training_on_streamed_features_learns(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch):
    # Prepare: synthetic parties whose features are written in row groups of 500 rows; the
    # config with every party streaming one row group at a time
    import splitrec_core.features.build as features_module
    from splitrec_core.training.local import train_split_local
    from splitrec_core.workspace import Workspace

    monkeypatch.setattr(features_module, "ROW_GROUP_ROWS", 500)
    write_parties(tmp_path / "data", 4000, seed=5)
    cfg = load_config(SYNTHETIC_TOML)
    streaming = with_training(cfg, stream_buffer=1)
    features = prepare_features(cfg, tmp_path)
    assert pq.ParquetFile(features["bank"].train).metadata.num_row_groups > 3

    # Execute
    space = Workspace(tmp_path)
    result = train_split_local(streaming, features, {p: space.trained(p) for p in features})

    # Assert: both tasks learned (batches that paired one party's rows with another's people
    # would leave the bank's and media's columns noise: income AUC about 0.7)
    metrics = evaluate(result.predictions, features["advertiser"].test,
                       cfg.task_names)
    assert metrics["income_50k"]["auc"] > 0.87
    assert metrics["never_married"]["auc"] > 0.87
