"""Per-party features: fitted on training rows only, applied identically to test rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from splitrec_core.config import PartyConfig
from splitrec_core.features import FeatureMatrix, Transform, build_features


def test_fit_uses_training_rows_only(tmp_path: Path):
    # Prepare: rows 0-3 train, rows 4-5 test; the test rows hold a category and values
    # that training never saw
    party = PartyConfig(name="bank", file="bank.csv", categorical=["product"], numeric=["balance"])
    validated = tmp_path / "validated.parquet"
    pq.write_table(pa.table({
        "product": ["p1", "p2", "p1", None, "only-in-test", "p2"],
        "balance": [0.0, 9.0, 99.0, np.nan, 1e9, 9.0],
    }), validated)
    aligned = tmp_path / "aligned.parquet"
    pq.write_table(pa.table({"row": [5, 4, 3, 2, 1, 0], "position": [0, 1, 2, 3, 4, 5],
                             "is_train": [False, False, True, True, True, True]}), aligned)

    # Execute
    out = build_features(party, validated, aligned, tmp_path / "features")

    # Assert
    transform = Transform.load(out.transform)
    assert transform.vocabularies == {"product": ["p1", "p2"]}
    train_logs = np.log1p([0.0, 9.0, 99.0])
    assert transform.means["balance"] == np.mean(train_logs)
    assert transform.stds["balance"] == np.std(train_logs)
    test = FeatureMatrix.read(out.test)
    assert test.cats[:, 0].tolist() == [2, 0]  # 'p2' -> 2, the unseen category -> 0
    train = FeatureMatrix.read(out.train)
    assert train.cats[:, 0].tolist() == [0, 1, 2, 1]  # rows 3 (null), 2, 1, 0
    assert FeatureMatrix.positions(out.train).tolist() == [2, 3, 4, 5]
    assert train.nums[0, 0] == 0.0  # a missing numeric becomes the training mean


def test_transform_applies_to_raw_rows_like_training():
    party = PartyConfig(name="p", file="p.csv", categorical=["c"], numeric=["x"])
    rows = pd.DataFrame({"c": ["a", "b", "a"], "x": [1.0, 10.0, 100.0]})
    transform = Transform.fit(party, rows)
    cats, nums = transform.apply(rows)
    assert cats[:, 0].tolist() == [1, 2, 1]
    assert abs(float(nums[:, 0].mean())) < 1e-6
    assert transform.vocab_sizes() == [3]


def test_features_fitted_a_row_group_at_a_time_equal_one_fit(tmp_path: Path):
    # Prepare: 5,000 rows with missing values, as one row group and as row groups of 700
    rng = np.random.default_rng(0)
    party = PartyConfig(name="bank", file="bank.csv", categorical=["product"], numeric=["balance"])
    balance = rng.lognormal(5, 2, 5000)
    balance[rng.random(5000) < 0.1] = np.nan
    table = pa.table({"product": rng.choice(["p0", "p1", "p2", None], 5000), "balance": balance})
    order = rng.permutation(5000)[:4000]
    aligned = tmp_path / "aligned.parquet"
    pq.write_table(pa.table({"row": order, "position": np.arange(4000),
                             "is_train": rng.random(4000) < 0.7}), aligned)
    pq.write_table(table, tmp_path / "one.parquet")
    pq.write_table(table, tmp_path / "groups.parquet", row_group_size=700)

    # Execute
    one = build_features(party, tmp_path / "one.parquet", aligned, tmp_path / "one")
    groups = build_features(party, tmp_path / "groups.parquet", aligned, tmp_path / "groups")

    # Assert: the same vocabulary, moments equal to rounding, the same rows in the same order
    fitted, merged = Transform.load(one.transform), Transform.load(groups.transform)
    assert fitted.vocabularies == merged.vocabularies == {"product": ["p0", "p1", "p2"]}
    assert merged.means["balance"] == pytest.approx(fitted.means["balance"], rel=1e-12)
    assert merged.stds["balance"] == pytest.approx(fitted.stds["balance"], rel=1e-12)
    for name in ("train", "test"):
        a, b = pq.read_table(getattr(one, name)), pq.read_table(getattr(groups, name))
        assert a.column("position").equals(b.column("position"))
        assert a.column("cat:product").equals(b.column("cat:product"))
        np.testing.assert_allclose(a.column("num:balance").to_numpy(),
                                   b.column("num:balance").to_numpy(), rtol=1e-6)
