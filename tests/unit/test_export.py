"""Export round trip: per-party SavedModels reproduce the evaluated test predictions."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from splitrec_core.export import ExportedParty, export_party
from splitrec_core.io import read_json
from splitrec_core.workspace import Workspace


def test_export_reproduces_test_predictions(trained):
    # Prepare
    cfg, run, _, features, split, _ = trained
    space = Workspace(run)

    # Execute: export each party, then score the test people from each party's raw rows
    exports = {
        p.name: export_party(cfg, p.name, split.models[p.name], features[p.name].transform,
                             space.export(p.name),
                             split.models["top"] if p.name == cfg.label_party else None)
        for p in cfg.parties
    }
    rows = {}
    for party in cfg.parties:
        aligned = pq.read_table(space.aligned(party.name)).to_pandas()
        test_rows = aligned.loc[~aligned["is_train"], "row"].to_numpy()
        table = pq.read_table(space.validated(party.name) / "validated.parquet").to_pandas()
        rows[party.name] = table.iloc[test_rows].reset_index(drop=True)
    loaded = {p: ExportedParty.load(folder) for p, folder in exports.items()}
    scored = loaded[cfg.label_party].predict([loaded[p].embed(rows[p]) for p in cfg.order])

    # Assert
    expected = pq.read_table(split.predictions).to_pandas()
    for j, task in enumerate(cfg.task_names):
        np.testing.assert_allclose(scored[:, j], expected[f"p:{task}"], atol=1e-5)
    label = read_json(exports[cfg.label_party] / "manifest.json")
    assert label["top"]["parties"] == ["advertiser", "bank", "media"]
    assert label["inputs"] == {"categorical": ["region", "tier"], "numeric": ["age"]}
    bank = read_json(exports["bank"] / "manifest.json")
    assert bank["role"] == "feature" and "top" not in bank
    assert not (exports["bank"] / "top").exists()
    assert sorted(p.name for p in exports["bank"].iterdir()) == ["bottom", "manifest.json",
                                                                 "transform.json"]
