"""The command line's one place for exit codes, through real commands.

Bad input prints one red line `error: …` and exits with 2; a peer that does not answer prints
one line and exits with 1.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import tomli_w
from typer.testing import CliRunner

from flows.cli import app
from splitrec_core.channel import PeerError, ProtocolError
from splitrec_core.channel.flight.addresses import free_port_block
from splitrec_core.config import read_toml
from splitrec_core.datasets.synthetic import write_parties
from splitrec_core.errors import InputError
from splitrec_core.federation import write_trial_federation
from tests.conftest import REPO, SYNTHETIC_TOML


@pytest.fixture
def trial(tmp_path: Path, synthetic_cfg) -> dict[str, tuple[Path, Path]]:
    """A trial federation of the synthetic parties: party → (federation file, private file)."""
    write_parties(tmp_path / "data", 200, seed=1)
    data = {p.name: synthetic_cfg.party_file(p, tmp_path) for p in synthetic_cfg.parties}
    return write_trial_federation(synthetic_cfg, data, tmp_path / "fed", free_port_block(3))


def test_a_malformed_option_is_bad_input_one_line_and_exit_2():
    result = CliRunner().invoke(app, ["score", str(SYNTHETIC_TOML), "--input", "bank"])

    assert result.exit_code == 2
    assert result.stderr == "error: --input: expected PARTY=FILE, got ['bank']\n"


def test_version_prints_the_installed_version():
    from importlib.metadata import version

    result = CliRunner().invoke(app, ["--version"])

    assert (result.exit_code, result.stdout) == (0, f"splitrec {version('splitrec')}\n")


def test_another_partys_private_file_is_bad_input_one_line_and_exit_2(trial):
    # Prepare: the bank's folder, run as the media
    federation, private = trial["bank"]

    # Execute
    result = CliRunner().invoke(app, ["party", "models", "list", str(federation),
                                      "--party", "media"])

    # Assert: one line naming the bank's private file (resolved, beside its federation file)
    assert result.exit_code == 2
    assert result.stderr == (f"error: {private.resolve()}: it is bank's private file, "
                             "not media's\n")


@pytest.mark.timeout(600)  # a hang guard: the label party never answers
def test_a_peer_that_does_not_answer_is_one_line_and_exit_1(trial):
    # Prepare: the bank follows a move the label party never starts; it waits a second for it
    federation, _ = trial["bank"]
    shared = read_toml(federation)
    shared["timeouts"] |= {"connect_s": 1.0, "backoff_s": 0.2, "backoff_max_s": 0.2}
    federation.write_text(tomli_w.dumps(shared))

    # Execute
    result = CliRunner().invoke(app, ["party", "models", "follow", str(federation),
                                      "--party", "bank", "--run-id", "move-1"])

    # Assert: one line naming the label party that did not answer
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error: advertiser at 127.0.0.1:")
    assert "did not answer within 1 s" in line


@pytest.mark.parametrize(("error", "traceback"), [
    (ProtocolError("bank sent 'embedding' with 1 NaN or infinite values (of 2048)"), False),
    (PeerError("bank at 127.0.0.1:20052 did not answer within 120 s"), False),
    (InputError("bank.csv", "user_id", "3 duplicate IDs"), False),
    (KeyError("a bug"), True),
])
def test_prefect_logs_a_failing_peer_and_bad_input_as_their_line_only(error, traceback):
    # Prepare: a handler on a Prefect logger, as Prefect's own console handler is
    from flows.cli.bootstrap import quiet_expected_errors

    logger, lines = logging.getLogger("prefect.flow_runs"), io.StringIO()
    handler = logging.StreamHandler(lines)
    logger.addHandler(handler)
    try:
        quiet_expected_errors()
        try:
            raise error
        except Exception:
            logger.error("Task run failed", exc_info=True)
    finally:
        logger.removeHandler(handler)

    assert ("Traceback (most recent call last)" in lines.getvalue()) is traceback


@pytest.mark.timeout(300)  # a hang guard: the serving party never stops
def test_sigterm_stops_a_serving_party_and_its_prefect_api_as_ctrl_c_does(trial, tmp_path: Path):
    # Prepare: the label party serves (its deployments need its own temporary Prefect API)
    federation, _ = trial["advertiser"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")} | {
        "PYTHONPATH": str(REPO), "PREFECT_HOME": str(tmp_path / "prefect")}
    serving = subprocess.Popen([sys.executable, "-m", "flows.cli", "party", "serve",
                                str(federation), "--party", "advertiser"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    process = psutil.Process(serving.pid)
    deadline = time.monotonic() + 120
    while not process.children(recursive=True) and time.monotonic() < deadline:
        time.sleep(0.5)  # until its Prefect API runs
    api = process.children(recursive=True)
    assert api, "the serving party started no Prefect API"

    # Execute
    serving.send_signal(signal.SIGTERM)
    serving.wait(60)

    # Assert: the party stopped, and so did every process it started
    time.sleep(1)
    assert [p.pid for p in api if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
