"""A federation member that means harm: what it can no longer make another party do.

Each test plays the hostile member with a Flight client written here, holding a member's real
certificate and token (the threat a federation of separate organisations plans for), against a
party's real endpoint on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pytest
from pyarrow import flight
from typer.testing import CliRunner

from flows.cli import app
from splitrec_core.apart.jobs import Job
from splitrec_core.apart.serving import accept_runs
from splitrec_core.apart.sessions import endpoint
from splitrec_core.certs import make_trial_credentials
from splitrec_core.channel import Kind, PeerError, ProtocolError, array_table
from splitrec_core.channel.contract import RunStopped
from splitrec_core.channel.flight.addresses import Timeouts, free_port_block
from splitrec_core.channel.flight.auth import Security
from splitrec_core.channel.flight.endpoint import FlightEndpoint, Members
from splitrec_core.channel.flight.proof import ProofCheck, prove
from splitrec_core.channel.flight.server import MAX_STREAMS_PER_PEER
from splitrec_core.datasets.synthetic import write_parties
from splitrec_core.federation import PartyFiles, write_trial_federation
from tests.conftest import REPO, trial_security

QUICK = Timeouts(connect_s=2, recv_s=2, backoff_s=0.1, backoff_max_s=0.2)
PARTIES = ["label", "bank", "media"]
MiB = 1 << 20


@pytest.fixture
def star(tmp_path: Path):
    """The label party's endpoint expecting bank and media in run `run-1`; every credential."""
    security, hashes = trial_security(PARTIES, tmp_path / "creds")
    label = FlightEndpoint("label", "127.0.0.1:0", security["label"],
                           Members({"bank": "127.0.0.1:1", "media": "127.0.0.1:1"}, hashes,
                                   "federation-hash"), QUICK)
    label.expect("run-1", ["bank", "media"])
    yield label, security, hashes
    label.close()


def _client(port: int, security: Security, caller: str, called: str = "label",
            timeout: float | None = 10) -> tuple[flight.FlightClient, flight.FlightCallOptions]:
    """A hand-written client holding `security`'s certificate, key and token, as `caller`.

    Its calls carry the token and the proof of the certificate's key splitrec's own client
    sends; they end at `timeout`.
    """
    client = flight.FlightClient(security.location(f"127.0.0.1:{port}"),
                                 tls_root_certs=security.ca, cert_chain=security.cert,
                                 private_key=security.key)
    options = flight.FlightCallOptions(headers=security.call_headers(caller, called),
                                       timeout=timeout)
    return client, options


def _bank(security: dict, hashes: dict[str, str], peers: dict[str, str]) -> FlightEndpoint:
    """The bank's own endpoint, knowing `peers` at their addresses."""
    return FlightEndpoint("bank", "127.0.0.1:0", security["bank"],
                          Members(peers, hashes, "federation-hash"), QUICK)


def _open(client: flight.FlightClient, options: flight.FlightCallOptions, session: str,
          federation: str = "federation-hash") -> tuple:
    """Open a stream in `session` and read the server's first answer (its ACK, or an error)."""
    hello = json.dumps({"session": session, "federation": federation})
    writer, reader = client.do_exchange(flight.FlightDescriptor.for_command(hello), options)
    return writer, reader, reader.read_chunk().app_metadata


def test_a_run_id_that_is_not_a_plain_name_is_refused_at_the_command_line(tmp_path: Path):
    result = CliRunner().invoke(app, ["party", "run", str(tmp_path / "federation.toml"),
                                      "--party", "advertiser", "--run-id", "../../HOSTILE-x"])

    assert result.exit_code == 2
    assert result.stderr == ("error: --run-id: '../../HOSTILE-x' is not a plain name (1 to 64 "
                             "letters, digits, '.', '_' or '-', the first a letter or a digit)\n")


@pytest.mark.parametrize("run_id", ["../../../../HOSTILE-x", "/tmp/HOSTILE-x", ".hidden", ""])
def test_a_run_id_the_label_party_sends_is_a_plain_name_or_nothing_runs(
        tmp_path: Path, synthetic_cfg, run_id: str):
    # Prepare: the bank serves; the label party asks it to start a run under a path
    write_parties(tmp_path / "data", 100, seed=1)
    data = {p.name: synthetic_cfg.party_file(p, tmp_path) for p in synthetic_cfg.parties}
    folders = write_trial_federation(synthetic_cfg, data, tmp_path / "fed", free_port_block(3))
    views = {p: PartyFiles(federation=f, party=p).load() for p, (f, _) in folders.items()}
    started: list[str] = []
    accept_runs(views["bank"], {Job.TRAIN: started.append})
    before = sorted(tmp_path.rglob("*"))

    # Execute
    with pytest.raises(PeerError) as refused:
        endpoint(views["advertiser"]).start_run("bank", run_id)

    # Assert: one line back, nothing started, nothing written
    assert str(refused.value).endswith(
        f"refused: the run ID advertiser sent: {run_id!r} is not a plain name (1 to 64 letters, "
        f"digits, '.', '_' or '-', the first a letter or a digit)")
    assert "\n" not in str(refused.value)
    assert started == []
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize(("call", "answer"), [
    (lambda c, o: list(c.do_action(flight.Action("start-run", b"{not json"), o)),
     "its start-run request is not the JSON splitrec sends"),
    (lambda c, o: list(c.do_action(flight.Action("drop-tables", b""), o)),
     "label knows no action 'drop-tables'"),
    (lambda c, o: c.do_get(flight.Ticket(b"x"), o).read_all(), "label offers no DoGet"),
    (lambda c, o: list(c.list_flights(options=o)), "label offers no ListFlights"),
    (lambda c, o: c.do_exchange(flight.FlightDescriptor.for_command(b"\xff"), o)[1].read_chunk(),
     "its stream's descriptor is not the JSON hello splitrec sends"),
])
def test_every_refusal_is_one_line_to_the_peer_and_one_log_line_here(star, caplog, call, answer):
    label, security, _ = star
    client, options = _client(label.port, security["bank"], "bank")

    with caplog.at_level(logging.WARNING, logger="splitrec_core.channel.flight"):
        with pytest.raises(flight.FlightError) as refused:
            call(client, options)

    assert str(refused.value).startswith(f"{answer}. Detail:")
    assert "Traceback" not in str(refused.value)
    [logged] = caplog.messages
    assert logged.startswith("label refused ")
    assert "from bank at ipv4:127.0.0.1:" in logged and logged.endswith(f": {answer}")


def test_a_wrong_token_is_logged_with_the_callers_address(star, caplog):
    label, security, _ = star
    guessing = dataclasses.replace(security["bank"], token="guessed")
    client, options = _client(label.port, guessing, "bank")

    with caplog.at_level(logging.WARNING, logger="splitrec_core.channel.flight"):
        with pytest.raises(flight.FlightUnauthenticatedError):
            _open(client, options, "run-1/psi")

    [logged] = caplog.messages
    assert logged.startswith("label refused do_exchange from a caller at ipv4:127.0.0.1:")
    assert logged.endswith(": the bearer token is not one of this federation's parties'")


def test_streams_to_sessions_never_opened_are_refused_and_keep_nothing(star):
    # Prepare: a member opens 300 sessions the label party never opens, 1 MiB each
    label, security, _ = star
    client, options = _client(label.port, security["bank"], "bank")
    rss = psutil.Process(os.getpid()).memory_info
    refused, start = 0, rss().rss

    # Execute
    for n in range(300):
        hello = json.dumps({"session": f"other-run/{n}", "federation": "federation-hash"})
        writer, reader = client.do_exchange(flight.FlightDescriptor.for_command(hello), options)
        try:
            writer.write_metadata(pa.py_buffer(bytes(MiB)))
            reader.read_chunk()
        except flight.FlightUnavailableError as error:
            refused += "label has no session 'other-run/" in str(error)
        with contextlib.suppress(flight.FlightError):
            writer.close()

    # Assert: each refused by name, and the label party holds none of it
    assert refused == 300
    assert rss().rss - start < 64 * MiB


def test_a_feature_party_takes_no_stream_from_another_feature_party(tmp_path: Path):
    # Prepare: bank's endpoint in run run-1 of a star, where nobody dials a feature party
    security, hashes = trial_security(PARTIES, tmp_path / "creds")
    bank = _bank(security, hashes, {"label": "127.0.0.1:1", "media": "127.0.0.1:1"})
    bank.expect("run-1", [])
    client, options = _client(bank.port, security["media"], "media", "bank")

    # Execute, assert
    try:
        with pytest.raises(flight.FlightUnauthorizedError,
                           match=r"^media is not a member of session 'run-1/train' at bank\."):
            _open(client, options, "run-1/train")
    finally:
        bank.close()


def test_a_peer_holds_at_most_so_many_streams_open(star):
    label, security, _ = star
    client, options = _client(label.port, security["bank"], "bank")
    held = [_open(client, options, "run-1/psi") for _ in range(MAX_STREAMS_PER_PEER)]
    assert [bytes(first) for _, _, first in held] == [b"accepted"] * MAX_STREAMS_PER_PEER

    with pytest.raises(flight.FlightUnavailableError,
                       match=rf"^bank has {MAX_STREAMS_PER_PEER} streams open here already\."):
        _open(client, options, "run-1/psi")
    for writer, _, _ in held:
        writer.close()


STAGE_ORDER = ["label", "bank"]  # the two parties of the stop tests' session, run-1/train


def _refusing(endpoint: FlightEndpoint, peer: str, due: Kind, why: str) -> threading.Thread:
    """`endpoint`'s party on a thread: it takes `peer`'s first `due` and refuses it for `why`."""

    def refuse() -> None:
        with (contextlib.suppress(ProtocolError),
              endpoint.channel("run-1/train", STAGE_ORDER) as channel):
            channel.recv(due, peer)
            raise ProtocolError(why)

    refusing = threading.Thread(target=refuse)
    refusing.start()
    return refusing


def test_a_party_that_stops_for_a_peers_fault_tells_the_others_why(star):
    # Prepare: the label party refuses the bank's embedding; the bank then waits for a gradient
    label, security, hashes = star
    refusing = _refusing(label, "bank", Kind.EMBEDDING,
                         "bank sent 'embedding' with 8 NaN or infinite values (of 8)")
    bank = _bank(security, hashes, {"label": f"127.0.0.1:{label.port}"})

    # Execute, assert: the bank hears why at once, as an error no retry can mend
    try:
        with bank.channel("run-1/train", STAGE_ORDER) as channel:
            channel.send(Kind.EMBEDDING, "label", array_table(np.full((2, 4), np.nan)))
            with pytest.raises(RunStopped, match=r"^label stopped the run: bank sent 'embedding' "
                                                 r"with 8 NaN or infinite values \(of 8\)$"):
                channel.recv(Kind.GRADIENT, "label")
    finally:
        refusing.join(10)
        bank.close()


HOLDER_SCRIPT = """
import sys, time
from pathlib import Path
from splitrec_core.certs import PartyCredentials, token_sha256
from splitrec_core.channel.flight.auth import Security
from splitrec_core.channel.flight.endpoint import FlightEndpoint, Members
folder = Path(sys.argv[1])
files = {p: PartyCredentials(*(folder / p / n for n in ("ca.pem", "cert.pem", "key.pem", "token")))
         for p in ("label", "bank")}
hashes = {p: f.token_sha256() for p, f in files.items()}
label = FlightEndpoint("label", "127.0.0.1:0", Security.from_files(files["label"]),
                       Members({"bank": "127.0.0.1:1"}, hashes, "federation-hash"))
label.expect("run-1", ["bank"])
(folder / "port").write_text(str(label.port))
while not (folder / "go").exists():
    time.sleep(0.1)
label.close(wait_s=1)  # a second for streams to end, then their connections are cut
sys.exit(3)  # as after an error
"""


@pytest.mark.timeout(300)  # a hang guard
def test_a_peer_that_holds_its_stream_open_cannot_keep_a_party_from_exiting(tmp_path: Path):
    # Prepare: the label party's endpoint in a process of its own; the bank holds a stream
    credentials = make_trial_credentials({p: ["127.0.0.1"] for p in ("label", "bank")}, tmp_path)
    label = subprocess.Popen([sys.executable, "-c", HOLDER_SCRIPT, str(tmp_path)],
                             env=os.environ | {"PYTHONPATH": str(REPO)})
    while not (tmp_path / "port").exists() and label.poll() is None:
        time.sleep(0.1)
    client, options = _client(int((tmp_path / "port").read_text()),
                              Security.from_files(credentials["bank"]), "bank", timeout=None)
    held = _open(client, options, "run-1/train")  # writer and reader: the stream stays open
    assert bytes(held[2]) == b"accepted"

    # Execute: the label party stops while the bank keeps its stream open
    (tmp_path / "go").touch()
    try:
        code = label.wait(120)
    except subprocess.TimeoutExpired:
        label.kill()
        code = None

    # Assert: it exited as it meant to, with the bank's stream still open
    with contextlib.suppress(flight.FlightError):
        held[0].close()
    assert code == 3


def test_record_batch_data_ends_the_stream_as_a_protocol_violation(star):
    # Prepare: the bank opens its stream in a session the label party expects
    label, security, _ = star
    client, options = _client(label.port, security["bank"], "bank")
    writer, _reader, first = _open(client, options, "run-1/psi")
    assert bytes(first) == b"accepted"
    link = label.link("run-1/psi", "bank")

    # Execute: 8 MiB of record-batch data, which splitrec never sends
    table = pa.table({"x": pa.array([bytes(MiB)] * 8)})
    writer.begin(table.schema)
    with contextlib.suppress(flight.FlightError):
        writer.write_table(table)
    while link.failure is None:
        time.sleep(0.05)

    # Assert
    assert link.failure == ("bank sent a Flight message without splitrec's framing "
                            "(record-batch data, or no metadata)")
    with contextlib.suppress(flight.FlightError):
        writer.close()


def test_a_members_certificate_with_another_members_token_is_refused(star, caplog):
    # Prepare: media has seen the label party's token (the label party called it); it tries it
    # on bank, with its own certificate, to start a run there as the label party
    _, security, hashes = star
    as_label = dataclasses.replace(security["media"], token=security["label"].token)
    bank = _bank(security, hashes, {"label": "127.0.0.1:1", "media": "127.0.0.1:1"})
    started: list[str] = []
    bank.on_start = lambda caller, job, run_id: started.append(run_id) or "started"
    client, options = _client(bank.port, as_label, "label", "bank")
    request = {"job": "train", "run_id": "run-2", "federation": "federation-hash"}

    # Execute
    try:
        with caplog.at_level(logging.WARNING, logger="splitrec_core.channel.flight"):
            with pytest.raises(flight.FlightUnauthenticatedError,
                               match=r"^its token is label's, but its certificate is media's\."):
                list(client.do_action(flight.Action("start-run", json.dumps(request).encode()),
                                      options))
    finally:
        bank.close()

    # Assert: nothing started, and bank logged who tried from where
    assert started == []
    [logged] = caplog.messages
    assert logged.startswith("bank refused do_action from a caller at ipv4:127.0.0.1:")
    assert logged.endswith(": its token is label's, but its certificate is media's")


def test_a_proof_addressed_to_one_party_does_not_pass_at_another(star):
    # label received bank's proof with bank's call; it replays both to media
    _, security, _ = star
    bank = security["bank"]
    proof = prove(bank.cert, bank.key, "bank", "label")

    assert ProofCheck(bank.ca, "label").why_not(proof, "bank") is None
    assert ProofCheck(bank.ca, "media").why_not(proof, "bank") == (
        "its proof is not signed by its certificate's key for this party now")


def test_a_party_that_dialed_tells_the_party_it_dialed_why_it_stops(star):
    # Prepare: the bank (which dials) refuses the label party's gradient
    label, security, hashes = star
    bank = _bank(security, hashes, {"label": f"127.0.0.1:{label.port}"})
    refusing = _refusing(bank, "label", Kind.GRADIENT, "label sent 'gradient'\nwith NaN\x1b[31m")

    # Execute, assert: one printable line of the bank's reason reaches the label party
    try:
        with label.channel("run-1/train", STAGE_ORDER) as channel:
            channel.send(Kind.GRADIENT, "bank", array_table(np.full((2, 4), np.nan)))
            with pytest.raises(RunStopped, match=r"^bank stopped the run: label sent 'gradient'$"):
                channel.recv(Kind.EMBEDDING, "bank")
    finally:
        refusing.join(10)
        bank.close()


def test_the_label_party_passes_a_stop_on_and_bad_input_stays_its_own():
    from splitrec_core.channel.contract import stop_reason
    from splitrec_core.errors import InputError

    assert stop_reason(RunStopped("bank stopped the run: x")) == "bank stopped the run: x"
    assert stop_reason(ProtocolError("")) == "ProtocolError"
    assert stop_reason(InputError("advertiser.csv", "user_id", "3 duplicate IDs")) == (
        "bad input (this party's own files or settings: its log says which)")
    assert stop_reason(PeerError("bank did not answer")) is None  # a retry may mend it


def test_a_call_without_a_proof_is_refused(star):
    _, security, _ = star
    assert ProofCheck(security["bank"].ca, "label").why_not(None, "bank") == (
        "no proof that the caller holds bank's certificate key (x-splitrec-proof)")
    assert ProofCheck(security["bank"].ca, "label").why_not("a.b", "bank") == (
        "its x-splitrec-proof header is not one splitrec sends")


def test_a_certificate_that_does_not_name_its_party_is_refused_when_read(tmp_path: Path):
    from splitrec_core.errors import InputError

    credentials = make_trial_credentials({"bank": ["127.0.0.1"]}, tmp_path)["bank"]
    with pytest.raises(InputError, match=r"cert\.pem: the certificate names \['bank'\] as its "
                                         r"common name, not 'media'"):
        Security.from_files(credentials, party="media")


def test_a_stream_quiet_both_ways_past_a_messages_patience_is_cut(tmp_path: Path, caplog):
    # Prepare: patience 1 s for a message and 1 s for a dial: a stream quiet for 2 s is cut
    security, hashes = trial_security(PARTIES, tmp_path)
    label = FlightEndpoint("label", "127.0.0.1:0", security["label"],
                           Members({"bank": "127.0.0.1:1"}, hashes, "federation-hash"),
                           Timeouts(connect_s=1, recv_s=1))
    label.expect("run-1", ["bank"])
    client, options = _client(label.port, security["bank"], "bank", timeout=None)

    # Execute: the bank opens its stream and sends nothing
    try:
        with caplog.at_level(logging.WARNING, logger="splitrec_core.channel.flight"):
            writer, reader, first = _open(client, options, "run-1/psi")
            assert bytes(first) == b"accepted"
            with pytest.raises(flight.FlightError):
                reader.read_chunk()  # returns only when the stream ends
    finally:
        label.close()

    # Assert: the label party cut it, and said so
    [logged] = caplog.messages
    assert logged.startswith("label cut the stream of bank at ipv4:127.0.0.1:")
    assert logged.endswith(": nothing crossed it for 2 s")
