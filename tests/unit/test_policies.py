"""Cache keys: which change re-runs a task.

tests/integration/test_pipeline.py checks the same through real flow runs.
"""

from __future__ import annotations

from pathlib import Path

from splitrec_core.config import load_config
from splitrec_core.features import PartyFeatures
from tasks._policies import ConfigSections, FileContent
from tests.conftest import SYNTHETIC_TOML


def _file_key(**inputs: object) -> str | None:
    return FileContent().compute_key(None, inputs, {})  # type: ignore[arg-type]


def test_file_content_keys_on_the_bytes_of_every_file_a_task_reads(tmp_path: Path):
    # Prepare: a party's features, passed as a task's dataclass input, and its output folder
    files = PartyFeatures(tmp_path / "train.parquet", tmp_path / "test.parquet",
                          tmp_path / "transform.json")
    for path in files.paths:
        path.write_bytes(b"v1 " + path.name.encode())

    # Execute
    base = _file_key(features={"bank": files}, workdir=tmp_path / "run-1")
    moved_output = _file_key(features={"bank": files}, workdir=tmp_path / "run-2")
    files.test.write_bytes(b"v1 test.parquet")  # same bytes, newer file
    rewritten_same = _file_key(features={"bank": files}, workdir=tmp_path / "run-1")
    files.test.write_bytes(b"v2 test.parquet")
    changed = _file_key(features={"bank": files}, workdir=tmp_path / "run-1")
    files.test.unlink()
    missing = _file_key(features={"bank": files}, workdir=tmp_path / "run-1")

    # Assert: only the bytes count (not the output folder, not the file's time)
    assert base == moved_output == rewritten_same
    assert len({base, changed, missing}) == 3


def test_a_folder_input_keys_on_every_file_inside(tmp_path: Path):
    model = tmp_path / "bottom"
    (model / "variables").mkdir(parents=True)
    (model / "variables" / "w").write_bytes(b"1")
    before = _file_key(bottom=model)
    (model / "variables" / "w").write_bytes(b"2")
    assert _file_key(bottom=model) != before


def test_config_sections_key_only_on_the_sections_a_task_reads():
    # Prepare: the PSI task reads the label party and the PSI settings, nothing else
    policy = ConfigSections(sections=("label_party", "psi"))
    cfg = load_config(SYNTHETIC_TOML)

    def key(config: object) -> str | None:
        return policy.compute_key(None, {"cfg": config}, {})  # type: ignore[arg-type]

    # Execute
    renamed = cfg.model_copy(update={"name": "shorter"})
    retrained = cfg.model_copy(update={"training": cfg.training.model_copy(update={"epochs": 2})})
    new_domain = cfg.model_copy(update={"psi": cfg.psi.model_copy(update={"domain": "other"})})

    # Assert: changing the name or training keeps the PSI cached; a new PSI domain re-runs it
    assert key(cfg) == key(renamed) == key(retrained)
    assert key(new_domain) != key(cfg)
