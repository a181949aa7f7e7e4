"""A federation file carries every shared setting of a one-process config to every party."""

from __future__ import annotations

from pathlib import Path

import tomli_w
from typer.testing import CliRunner

from flows.cli import app
from splitrec_core.config import RunSettings, load_config, read_toml
from splitrec_core.datasets.synthetic import write_parties
from splitrec_core.federation import load_party, shared_settings
from tests.conftest import SYNTHETIC_TOML

# A value other than the default in every shared section, so a section that does not reach a
# party shows up as a difference
CHANGED = {
    "tasks": [{"name": "income_50k", "column": "income_50k", "weight": 2.0},
              {"name": "never_married", "column": "never_married", "weight": 0.5}],
    "training": {"epochs": 3, "batch_size": 256, "learning_rate": 0.01, "learning_rate_decay": 0.9,
                 "validation_fraction": 0.2, "patience": 2, "wire_dtype": "float16",
                 "embed_ahead": 1, "batches_per_message": 2, "stream_buffer": 1, "seed": 11,
                 "local_updates": True, "local_workset": 3, "local_reuse": 2,
                 "local_min_cosine": 0.25},
    "privacy": {"clip_norm": 1.5, "embedding_noise": 0.01, "gradient_noise": 0.002},
    "psi": {"domain": "trial-v2", "normalize": ["strip", "lower"], "write_unmatched": True,
            "chunk_size": 1234},
    "channel": {"max_message_mb": 300, "inbox_mb": 8},
    "schedule": {"cron": "15 4 * * 2", "timezone": "Europe/Berlin"},
    "registry": {"promotion_margin": 0.02, "max_leakage_auc": 0.9},
    "notify": {"block": "slack-webhook/ops"},
}


def test_every_shared_section_round_trips_through_a_trial_federation(tmp_path: Path):
    # Prepare: the synthetic config with every shared section changed, and its parties' data
    config = tmp_path / "changed.toml"
    config.write_text(tomli_w.dumps(read_toml(SYNTHETIC_TOML) | CHANGED))
    cfg = load_config(config)
    defaults = RunSettings(name=cfg.name, label_party=cfg.label_party, tasks=cfg.tasks)
    unchanged = [name for name in RunSettings.model_fields
                 if name not in ("name", "label_party", "tasks")
                 and getattr(cfg, name) == getattr(defaults, name)]
    assert unchanged == [], f"give these sections a value other than the default: {unchanged}"
    write_parties(tmp_path / "data", 200, seed=0)

    # Execute: `splitrec party trial`, then each party reads its copy and its private file
    result = CliRunner().invoke(app, ["party", "trial", str(config), "--data-workdir",
                                      str(tmp_path), "--out", str(tmp_path / "trial")])
    assert result.exit_code == 0, result.output
    views = {p.name: load_party(tmp_path / "trial" / p.name / "federation.toml",
                                tmp_path / "trial" / p.name / "party.toml", p.name)
             for p in cfg.parties}

    # Assert: every shared section, the model and each party's own columns arrive whole; each
    # party listens on 127.0.0.1 alone, as `party trial --help` says
    for name, view in views.items():
        assert view.listen == f"127.0.0.1:{20051 + cfg.order.index(name)}", name
        assert shared_settings(view.config) == shared_settings(cfg), name
        assert view.config.model == cfg.model, name
        assert view.config.order == cfg.order, name
        mine = view.config.party(name)
        assert mine.feature_columns == cfg.party(name).feature_columns, name
        assert all(view.config.party(p).is_peer for p in cfg.order if p != name), name


def test_reading_a_federation_file_does_not_load_flight():
    # Prepare: a fresh interpreter, so no other test has loaded Flight already
    import subprocess
    import sys

    from tests.conftest import REPO

    probe = ("import sys; import splitrec_core.federation; "
             "before = 'pyarrow.flight' in sys.modules; "
             "import splitrec_core.channel.flight.endpoint; "
             "print(before, 'pyarrow.flight' in sys.modules)")

    # Execute
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)

    # Assert: Flight loads with the endpoint, not with the federation file's reader
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "True"]


def test_a_party_listens_on_the_loopback_only_when_its_address_is_one(tmp_path: Path):
    # Prepare: a trial federation, then the bank's address moved to a host name
    write_parties(tmp_path / "data", 200, seed=0)
    result = CliRunner().invoke(app, ["party", "trial", str(SYNTHETIC_TOML), "--data-workdir",
                                      str(tmp_path), "--out", str(tmp_path / "trial")])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "trial" / "bank"
    shared = read_toml(folder / "federation.toml")
    trial = load_party(folder / "federation.toml", folder / "party.toml", "bank").listen
    for member in shared["parties"]:
        member["address"] = member["address"].replace("127.0.0.1", "bank.example.org")
    (folder / "federation.toml").write_text(tomli_w.dumps(shared))

    # Execute
    apart = load_party(folder / "federation.toml", folder / "party.toml", "bank").listen

    # Assert
    assert (trial, apart) == ("127.0.0.1:20052", "0.0.0.0:20052")
