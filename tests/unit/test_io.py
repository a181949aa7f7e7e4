"""Crash-safe writes: a write that dies leaves the old file whole; JSON is always strict JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from splitrec_core.io import atomic_path, read_json, write_json
from tests.conftest import REPO

WRITE_THEN_HANG = """
import sys, time
from pathlib import Path
from splitrec_core.io import atomic_path
with atomic_path(Path(sys.argv[1])) as tmp:
    with tmp.open("w") as handle:
        handle.write("half of the new ")
        handle.flush()
        print("writing", flush=True)
        time.sleep(60)
        handle.write("content")
"""


def test_a_process_killed_mid_write_leaves_the_old_file(tmp_path: Path):
    # Prepare
    final = tmp_path / "metrics.json"
    final.write_text("old content")

    # Execute: a writer that is killed (SIGKILL) after writing half of the new content
    writer = subprocess.Popen([sys.executable, "-c", WRITE_THEN_HANG, str(final)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
    writer.kill()
    writer.wait()

    # Assert
    assert final.read_text() == "old content"


def test_an_error_mid_write_leaves_the_old_file_and_no_temporary(tmp_path: Path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "weights").write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(final) as tmp:
            tmp.mkdir()
            (tmp / "weights").write_text("new, half")
            raise RuntimeError("disk full")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert (final / "weights").read_text() == "old"


def test_a_finished_write_replaces_a_folder_whole(tmp_path: Path):
    final = tmp_path / "export"
    final.mkdir()
    (final / "stale").write_text("from the previous run")
    with atomic_path(final) as tmp:
        tmp.mkdir()
        (tmp / "manifest.json").write_text("{}")
    assert sorted(p.name for p in final.iterdir()) == ["manifest.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


def test_json_has_no_nan_a_missing_figure_is_null(tmp_path: Path):
    # Execute
    figures = {"auc": float("nan"), "loss": [0.5, float("inf")], "rows": 3}
    path = write_json(figures, tmp_path / "m.json")

    # Assert: strict parsers (browsers, jq) accept the file
    def reject(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    assert json.loads(path.read_text(), parse_constant=reject) == {
        "auc": None, "loss": [0.5, None], "rows": 3}
    assert read_json(path)["auc"] is None
