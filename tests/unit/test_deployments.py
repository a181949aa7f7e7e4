"""The served deployments, as the Prefect API records them: the config's schedule in its time
zone, and the parameters a user can edit per run in the UI."""

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
    assert {"config_path", "workdir", "epochs", "gradient_noise", "promotion_margin"} <= set(editable)
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
