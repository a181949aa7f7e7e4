"""The served deployments, as the Prefect API records them.

The config's schedule in its time zone, and the parameters a user can edit per run in the UI.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from splitrec_core.config import load_config
from splitrec_core.errors import InputError
from tests.conftest import SYNTHETIC_TOML


def test_the_retrain_deployment_keeps_the_configs_time_zone(prefect_api, tmp_path: Path):
    # Prepare: weekdays at 06:30 in Berlin (05:30 UTC in winter, 04:30 in summer)
    from prefect.client.orchestration import get_client

    from deployments.serve import retrain_deployment

    config = tmp_path / "berlin.toml"
    config.write_text(f'extends = "{SYNTHETIC_TOML}"\n'
                      '[schedule]\ncron = "30 6 * * 1-5"\ntimezone = "Europe/Berlin"\n')

    # Execute
    deployment_id = retrain_deployment(config, tmp_path / "run").apply()

    # Assert
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(deployment_id)
    [schedule] = deployment.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("30 6 * * 1-5", "Europe/Berlin")
    assert schedule.active
    editable = deployment.parameter_openapi_schema["properties"]
    assert {"config_path", "workdir", "epochs", "gradient_noise", "promotion_margin"} <= set(
        editable)
    assert deployment.parameters == {"config_path": str(config.resolve()),
                                     "workdir": str((tmp_path / "run").resolve())}


def test_the_score_deployment_asks_each_run_for_the_new_rows(prefect_api, tmp_path: Path):
    from prefect.client.orchestration import get_client

    from deployments.serve import score_deployment

    deployment_id = score_deployment(SYNTHETIC_TOML, tmp_path / "run").apply()

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(deployment_id)
    assert deployment.schedules == []
    assert deployment.parameters["model"] == "current"
    assert deployment.parameter_openapi_schema["required"] == ["config_path", "workdir", "inputs"]


def test_an_unknown_time_zone_is_a_config_error(tmp_path: Path):
    config = tmp_path / "mars.toml"
    config.write_text(f'extends = "{SYNTHETIC_TOML}"\n[schedule]\ntimezone = "Mars/Olympus"\n')
    with pytest.raises(InputError, match=r"key 'schedule.timezone': 'Mars/Olympus' is not an IANA "
                                         r"time zone"):
        load_config(config)


def test_a_serving_label_party_offers_retrain_and_score_and_feature_parties_score_their_rows(
        prefect_api, tmp_path: Path, synthetic_cfg):
    # Prepare: a trial federation (no party listens: its ports are never used here); the bank's
    # private file names its new rows, the media's not
    from prefect.client.orchestration import get_client

    from deployments.serve import feature_party_jobs, label_party_deployments
    from splitrec_core.datasets.synthetic import write_parties
    from splitrec_core.federation import PartyFiles, write_trial_federation

    write_parties(tmp_path / "data", 200, seed=1)
    data = {p.name: synthetic_cfg.party_file(p, tmp_path) for p in synthetic_cfg.parties}
    written = write_trial_federation(synthetic_cfg, data, tmp_path / "fed", 50051)
    bank_private = written["bank"][1]
    bank_private.write_text('score_input = "data/new.csv"\n' + bank_private.read_text())
    files = {p: PartyFiles(federation=shared, party=p, private=private, workdir=tmp_path / p)
             for p, (shared, private) in written.items()}
    views = {p: files[p].load() for p in files}

    # Execute
    deployments = label_party_deployments(views["advertiser"], files["advertiser"])
    with get_client(sync_client=True) as client:
        retrain, score = (client.read_deployment(d.apply()) for d in deployments)

    # Assert: retraining on the federation's schedule, scoring on demand, each inviting the
    # feature parties; the bank serves scoring runs on its score_input, the media cannot
    assert (retrain.name, score.name) == ("synthetic-advertiser", "synthetic-advertiser-score")
    assert [s.schedule.timezone for s in retrain.schedules] == [synthetic_cfg.schedule.timezone]
    assert score.schedules == []
    assert retrain.parameters["invite"] is True and score.parameters["invite"] is True
    for deployment in (retrain, score):  # each run reads the label party's own files
        assert PartyFiles.model_validate(deployment.parameters["files"]) == files["advertiser"]
    assert {"rows", "model", "run_id"} <= set(score.parameter_openapi_schema["properties"])
    jobs = {p: set(feature_party_jobs(views[p], files[p])) for p in ("bank", "media")}
    assert jobs == {"bank": {"train", "score", "models"}, "media": {"train", "models"}}
    assert views["bank"].rows_to_score() == (bank_private.parent / "data" / "new.csv").resolve()
    with pytest.raises(InputError, match=r"media.*party\.toml: no rows to score"):
        views["media"].rows_to_score()
