"""Operating splitrec through a real Prefect server, as its users do.

`prefect server start`, `splitrec serve` serving the retrain and score deployments, runs
triggered through the API.

A retrain registers and promotes a version and leaves its report on the run's page; a retrain
with gradient noise far above the setting is not promoted, and the report says why; rollback
returns every party to the champion before. (The score flow itself: test_scoring.py.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from splitrec_core.channel.flight.addresses import free_ports
from splitrec_core.config import load_config
from splitrec_core.io import read_json
from splitrec_core.registry import SharedModel
from tests.conftest import REPO, SYNTHETIC_TOML

PARTIES = ("advertiser", "bank", "media")


def _wait_for(check, what: str, timeout: float = 600) -> None:  # a hang guard
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001, S110 - not up yet
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{what} not ready after {timeout} s")


@contextmanager
def _prefect_server(home: Path, workdir: Path) -> Iterator[str]:
    """A Prefect server of its own, and `splitrec serve` on it; yields the API URL."""
    port = free_ports(1)[0]
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_RUNNER_POLL_FREQUENCY": "1"}  # the runner looks for runs every second
    bin_dir = Path(sys.executable).parent
    server = subprocess.Popen([str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    serving = None
    try:
        _wait_for(lambda: urllib.request.urlopen(f"{api}/health", timeout=1).status == 200,
                  "the Prefect server")
        serving = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "serve", str(SYNTHETIC_TOML), "--workdir",
             str(workdir)], cwd=REPO, env=env | {"PREFECT_API_URL": api},
            stdout=subprocess.DEVNULL, stderr=(home / "serve.log").open("w"))
        yield api
    finally:
        for process in (serving, server):
            if process:
                process.terminate()
                process.wait(timeout=60)


def _run(name: str, parameters: dict) -> object:
    from prefect.deployments import run_deployment

    run = run_deployment(name, parameters=parameters, timeout=600, poll_interval=1)
    assert run.state.is_completed(), f"{name}: {run.state}"
    return run


def _artifacts(client, flow_run_id) -> dict[str, object]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    found = client.read_artifacts(artifact_filter=ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in found}


def test_retrain_promote_refuse_and_roll_back_through_a_prefect_server(tmp_path: Path):
    # Prepare: synthetic parties, a Prefect server, splitrec serving its deployments on it
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from splitrec_core.datasets.synthetic import write_parties

    workdir = tmp_path / "run"
    write_parties(workdir / "data", 2000, seed=6)
    registry = SharedModel.of(load_config(SYNTHETIC_TOML), workdir)
    report = workdir / "report" / "metrics.json"

    with _prefect_server(tmp_path / "prefect", workdir) as api, \
            temporary_settings(updates={PREFECT_API_URL: api}), \
            get_client(sync_client=True) as client:
        _wait_for(lambda: client.read_deployment_by_name("score/synthetic-score"),
                  "the served deployments")

        # Execute: a retrain, as the schedule or the UI's Run button starts it
        first = _run("train_pipeline/synthetic-retrain", {"epochs": 4})

        # Assert: a registered version, current at every party, its report on the run's page
        champion = read_json(report)["promotion"]
        assert champion["promote"] and champion["reasons"] == ["no champion yet"]
        assert {p: r.aliases().current for p, r in registry.registries.items()} == \
            dict.fromkeys(PARTIES, champion["version"])
        artifacts = _artifacts(client, first.id)
        assert {"synthetic-metrics", "synthetic-traffic", "synthetic-report"} <= set(artifacts)
        assert "data:image/png;base64," in artifacts["synthetic-report"].data

        # Execute: a retrain with gradient noise far above the setting, one epoch
        worse = _run("train_pipeline/synthetic-retrain", {"epochs": 1, "gradient_noise": 1.0})

        # Assert: not promoted, and the report (file and page) says why
        verdict = read_json(report)["promotion"]
        assert not verdict["promote"] and verdict["champion"] == champion["version"]
        assert verdict["reasons"][-1] == "more than the promotion margin 0.005 below"
        assert {p: (r.aliases().current, r.aliases().candidate)
                for p, r in registry.registries.items()} == \
            dict.fromkeys(PARTIES, (champion["version"], verdict["version"]))
        assert "**not promoted**" in _artifacts(client, worse.id)["synthetic-report"].data

    # Execute: the worse version promoted by hand, then rolled back
    registry.promote("candidate")
    registry.rollback()

    # Assert: every party is back on the champion
    assert {p: r.aliases().current for p, r in registry.registries.items()} == \
        dict.fromkeys(PARTIES, champion["version"])

