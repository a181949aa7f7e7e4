"""The census demo end to end through the CLI: real data, three parties, split vs central."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _splitrec(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1800, check=True)


def test_census_split_mmoe_matches_central(tmp_path: Path):
    # Execute: exactly what `make demo` runs, in a fresh workdir
    _splitrec("data", "census", "--workdir", str(tmp_path), home=tmp_path / "prefect")
    _splitrec("run", "data/census.toml", "--workdir", str(tmp_path), "--centralized",
              home=tmp_path / "prefect")
    report = json.loads((tmp_path / "report" / "metrics.json").read_text())

    # Assert: quality floors, the central comparison, the alignment, the traffic
    tasks, central = report["tasks"], report["central"]
    assert tasks["income_50k"]["auc"] >= 0.94
    assert tasks["never_married"]["auc"] >= 0.99
    for task in tasks:
        assert abs(tasks[task]["auc"] - central[task]["auc"]) <= 0.005
    assert 0.84 * 299_285 < report["psi"]["intersection"] < 0.87 * 299_285
    assert report["rows"]["train"] + report["rows"]["test"] == report["psi"]["intersection"]
    assert report["channel"]["embedding"]["messages"] == report["channel"]["gradient"]["messages"]
    for party in ("advertiser", "media", "bank"):
        assert (tmp_path / "export" / party / "bottom" / "saved_model.pb").exists()
