"""Every party in a process of its own trains exactly as on threads of one process."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import with_training


@pytest.mark.parametrize("placement", ["processes", "flight"])
def test_parties_in_processes_train_exactly_as_on_threads(trained, tmp_path, placement):
    # A process per party, over pipes or over Arrow Flight with mutual TLS on 127.0.0.1
    from splitrec_core.training.local import train_split_local

    cfg, _, _, features, split, _ = trained
    cfg = with_training(cfg, parties_in=placement)
    apart = train_split_local(cfg, features, {p: tmp_path / p for p in features})
    a = pq.read_table(apart.predictions).to_pandas()
    b = pq.read_table(split.predictions).to_pandas()
    np.testing.assert_allclose(a.drop(columns="position"), b.drop(columns="position"), atol=1e-5)
    assert (apart.epochs_run, apart.best_epoch) == (split.epochs_run, split.best_epoch)
    # every party counted what it sent (the threads' hub also carried the PSI before)
    assert apart.channel == {k: v for k, v in split.channel.items()
                             if not k.startswith(("psi", "split"))}
