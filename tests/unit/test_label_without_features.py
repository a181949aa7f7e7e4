"""A label party with only IDs, labels and the split (an advertiser often has no more).

The top takes the feature parties' embeddings alone, and its own baseline is the base rate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from splitrec_core.config import Config
from splitrec_core.datasets.synthetic import write_parties
from splitrec_core.evaluate import Report, evaluate
from tests.conftest import prepare_features


def test_a_label_party_without_features_trains_on_the_feature_parties_embeddings(
        tmp_path: Path, synthetic_cfg: Config):
    # Prepare: the synthetic federation, the advertiser declaring no feature columns
    from splitrec_core.align import Alignment
    from splitrec_core.training.central import train_central, train_label_alone
    from splitrec_core.training.local import train_split_local
    from splitrec_core.workspace import Workspace

    write_parties(tmp_path / "data", 3000, seed=3)
    label = synthetic_cfg.label.model_copy(update={"categorical": [], "numeric": []})
    cfg = synthetic_cfg.model_copy(update={"parties": [label, *synthetic_cfg.feature_parties]})
    features = prepare_features(cfg, tmp_path)
    space, tasks = Workspace(tmp_path), cfg.task_names

    # Execute
    split = train_split_local(cfg, features, {p: space.trained(p) for p in features})
    central = train_central(cfg, features, space.central)
    alone = train_label_alone(cfg, features[cfg.label_party], space.label_only(cfg.label_party))

    # Assert: it learns from the others' columns, still exactly as central training does
    test = features[cfg.label_party].test
    metrics = evaluate(split.predictions, test, tasks)
    assert min(m["auc"] for m in metrics.values()) > 0.8
    a, b = (pq.read_table(r.predictions).to_pandas() for r in (split, central))
    np.testing.assert_allclose(a.drop(columns="position"), b.drop(columns="position"), atol=1e-5)
    # its own embedding has width 0 and its bottom no weights: the top sees the others' alone
    import keras

    top = keras.models.load_model(split.models["top"])
    cut = cfg.model.cut_dim
    assert [tuple(i.shape) for i in top.inputs] == [(None, 0), (None, cut), (None, cut)]
    assert keras.models.load_model(split.models[cfg.label_party]).weights == []
    # alone it can only predict the base rate, and the report says so
    baseline = evaluate(alone.predictions, test, tasks)
    assert {m["auc"] for m in baseline.values()} == {0.5}
    report = Report.of(metrics, Alignment({}, 1, 1, 1, {}), split, baseline,
                       label_has_features=False)
    assert any("holds no feature columns" in note for note in report.notes)
    assert report.lift["income_50k"]["lift"] == metrics["income_50k"]["auc"] - 0.5
