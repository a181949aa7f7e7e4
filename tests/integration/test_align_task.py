"""The PSI task's persisted result and the run folder never hold a PSI secret scalar."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import SYNTHETIC_TOML


def test_scalar_never_reaches_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_api):
    # Prepare: a recognisable scalar, and the PSI task run with result persistence on
    import splitrec_core.psi.points as psi
    from splitrec_core.config import load_config
    from tasks.align import align_ids

    marker = b"splitrec-psi-scalar-marker-0001!"
    monkeypatch.setattr(psi, "random_bytes", lambda size: marker)
    ids = {}
    for name, values in {"advertiser": ["a", "b", "c", "d"], "bank": ["b", "c", "d"],
                         "media": ["c", "d", "b", "z"]}.items():
        ids[name] = tmp_path / "in" / f"{name}.parquet"
        ids[name].parent.mkdir(exist_ok=True)
        pq.write_table(pa.table({"id": values}), ids[name])
    split = tmp_path / "in" / "split.parquet"
    pq.write_table(pa.table({"split": ["train", "test", "train", "test"]}), split)
    cfg = load_config(SYNTHETIC_TOML)

    # Execute
    result = align_ids(cfg, ids, split, tmp_path / "run")

    # Assert
    assert result.intersection == 3
    needles = [marker, marker.hex().encode(), repr(marker).encode()]
    stores = [tmp_path, Path(os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"])]
    files = [p for store in stores for p in store.rglob("*") if p.is_file()]
    assert any(p.is_relative_to(stores[1]) for p in files), "the task result was not persisted"
    for path in files:
        data = path.read_bytes()
        assert not any(n in data for n in needles), f"the PSI scalar reached {path}"
