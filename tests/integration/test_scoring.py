"""Batch scoring with the registered version.

It reproduces the pipeline's test predictions, scores rows with unseen categories and missing
values, and names the party and column of a file that does not match the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from splitrec_core.errors import InputError
from splitrec_core.scoring import trained_predictions
from tests.conftest import SYNTHETIC_TOML, as_new_rows

PARTIES = ("advertiser", "bank", "media")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, prefect_api) -> Path:
    """A synthetic federation trained and registered by the pipeline (version `current`)."""
    from flows.pipeline import train_pipeline
    from splitrec_core.datasets.synthetic import write_parties

    workdir = tmp_path_factory.mktemp("scoring")
    write_parties(workdir / "data", 3000, seed=5)
    train_pipeline(str(SYNTHETIC_TOML), str(workdir))
    return workdir


def _new_rows(workdir: Path, out: Path, change=None) -> dict[str, str]:
    """The label party's test rows without labels or split, and every feature party's rows."""
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for party in PARTIES:
        frame = as_new_rows(pd.read_csv(workdir / "data" / f"{party}.csv"), party == "advertiser")
        if change:
            frame = change(party, frame)
        files[party] = str(out / f"{party}.csv")
        frame.to_csv(files[party], index=False)
    return files


def test_scoring_the_test_rows_reproduces_the_pipelines_predictions(trained, tmp_path):
    from flows.score import score_pipeline

    scores = Path(score_pipeline(str(SYNTHETIC_TOML), str(trained),
                                 _new_rows(trained, tmp_path)))

    current = json.loads((trained / "parties" / "advertiser" / "models" / "synthetic"
                          / "aliases.json").read_text())["current"]
    assert scores.parent == trained / "parties" / "advertiser" / "scores"
    assert scores.name.startswith(f"{current}-score-")
    scored = pq.read_table(scores).to_pandas().set_index("user_id")
    expected = trained_predictions(trained, "advertiser", "user_id")
    assert sorted(scored.index) == sorted(expected.index)  # every test row, and only those
    difference = (scored.loc[expected.index] - expected).abs().to_numpy().max()
    assert difference < 1e-5
    # only the label party holds predictions
    assert [p for p in PARTIES if (trained / "parties" / p / "scores").exists()] == ["advertiser"]


def test_unseen_categories_and_missing_values_are_scored_as_in_training(trained, tmp_path):
    from flows.score import score_pipeline

    def unseen(party: str, frame: pd.DataFrame) -> pd.DataFrame:
        if party == "advertiser":
            frame.loc[frame.index[:50], "region"] = "atlantis"  # never in training
            frame.loc[frame.index[50:100], "age"] = np.nan
        if party == "bank":
            frame.loc[frame.index[:50], "product"] = np.nan
        return frame

    plain = Path(score_pipeline(str(SYNTHETIC_TOML), str(trained),
                                _new_rows(trained, tmp_path / "plain")))
    plain_bytes = plain.read_bytes()
    scores = Path(score_pipeline(str(SYNTHETIC_TOML), str(trained),
                                 _new_rows(trained, tmp_path / "unseen", unseen)))

    scored = pq.read_table(scores).to_pandas().set_index("user_id")
    expected = trained_predictions(trained, "advertiser", "user_id")
    assert len(scored) == len(expected)
    assert np.isfinite(scored.to_numpy()).all() and (scored.to_numpy() > 0).all()
    moved = (scored.loc[expected.index] - expected).abs().max(axis=1)
    assert (moved > 1e-4).sum() >= 50  # the changed rows score differently ...
    assert (moved < 1e-5).sum() >= len(expected) - 150  # ... the others exactly as before
    # a file per scoring run: the same version's earlier scores are still there, as they were
    assert scores != plain and plain.read_bytes() == plain_bytes


def test_a_file_without_a_column_the_model_takes_names_the_party_and_column(trained, tmp_path):
    from flows.score import score_pipeline

    def drop_balance(party: str, frame: pd.DataFrame) -> pd.DataFrame:
        return frame.drop(columns="balance") if party == "bank" else frame

    with pytest.raises(InputError, match=r"bank\.csv, column 'balance': party 'bank', model "
                                         r"version \w+: declared column is missing"):
        score_pipeline(str(SYNTHETIC_TOML), str(trained),
                       _new_rows(trained, tmp_path, drop_balance))


def test_new_rows_for_a_party_the_config_does_not_have_name_it(trained, tmp_path):
    from flows.score import score_pipeline

    files = _new_rows(trained, tmp_path)
    files["advertizer"] = files.pop("advertiser")  # a typo

    with pytest.raises(InputError, match=r"new rows given for \['advertizer'\], which is no "
                                         r"party of the config \(its parties: \['advertiser', "):
        score_pipeline(str(SYNTHETIC_TOML), str(trained), files)


def test_a_label_party_without_features_scores_on_the_feature_parties_embeddings(
        prefect_api, tmp_path):
    # Prepare: the synthetic federation, the advertiser declaring no feature columns (its h has
    # width 0 while the others' have the cut's), trained and registered by the pipeline
    import tomllib

    import tomli_w

    from flows.pipeline import train_pipeline
    from flows.score import score_pipeline
    from splitrec_core.datasets.synthetic import write_parties

    settings = tomllib.loads(SYNTHETIC_TOML.read_text())
    settings["parties"][0] |= {"categorical": [], "numeric": []}
    config = tmp_path / "synthetic.toml"
    config.write_text(tomli_w.dumps(settings))
    workdir = tmp_path / "run"
    write_parties(workdir / "data", 3000, seed=5)
    train_pipeline(str(config), str(workdir))

    # Execute
    scores = Path(score_pipeline(str(config), str(workdir), _new_rows(workdir, tmp_path / "new")))

    # Assert: every test row scored as the pipeline predicted it
    scored = pq.read_table(scores).to_pandas().set_index("user_id")
    expected = trained_predictions(workdir, "advertiser", "user_id")
    assert sorted(scored.index) == sorted(expected.index)
    assert (scored.loc[expected.index] - expected).abs().to_numpy().max() < 1e-5
