"""Who may talk over Flight: only this federation's parties, and anyone else is refused.

Only this federation's parties talk, over mutual TLS, with their own tokens and the same
federation file; anyone else is refused with an error that names the peer.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest

from splitrec_core.certs import make_trial_credentials
from splitrec_core.channel import Kind, PeerError, array_table, table_array
from splitrec_core.channel.flight.addresses import Timeouts
from splitrec_core.channel.flight.auth import Security
from splitrec_core.channel.flight.endpoint import FlightEndpoint, Members
from tests.conftest import trial_security

QUICK = Timeouts(connect_s=3, recv_s=3, backoff_s=0.1)
ORDER = ["label", "bank"]


@pytest.fixture
def federation(tmp_path: Path):
    """The label party's endpoint, serving; the bank's credentials and token hashes."""
    security, hashes = trial_security(ORDER, tmp_path / "ours")
    label = FlightEndpoint("label", "127.0.0.1:0", security["label"],
                           Members({"bank": "127.0.0.1:1"}, hashes, "federation-hash"), QUICK)
    yield label, security["bank"], hashes
    label.close()


def _bank_joins(label: FlightEndpoint, security: Security, hashes: dict[str, str],
                federation_hash: str = "federation-hash", session: str = "s",
                talk: bool = False) -> None:
    bank = FlightEndpoint("bank", "127.0.0.1:0", security,
                          Members({"label": f"127.0.0.1:{label.port}"}, hashes, federation_hash),
                          QUICK)
    try:
        with bank.channel(session, ORDER) as channel:
            if talk:  # echo one message back
                channel.send(Kind.GRADIENT, "label", channel.recv(Kind.EMBEDDING, "label"))
    finally:
        bank.close()


def test_the_federations_parties_connect_and_talk(federation):
    label, bank, hashes = federation
    failures: list[BaseException] = []

    def bank_side() -> None:
        try:
            _bank_joins(label, bank, hashes, talk=True)
        except BaseException as error:  # reported below
            failures.append(error)

    joined = threading.Thread(target=bank_side)
    joined.start()
    with label.channel("s", ORDER) as channel:
        channel.send(Kind.EMBEDDING, "bank", array_table(np.arange(6.0)))
        echoed = table_array(channel.recv(Kind.GRADIENT, "bank"))
    joined.join(10)
    assert not joined.is_alive() and failures == []
    np.testing.assert_array_equal(echoed, np.arange(6.0))


def test_a_wrong_token_is_refused(federation):
    label, bank, hashes = federation
    with pytest.raises(PeerError, match=r"label at 127\.0\.0\.1:\d+ refused our bearer token"):
        _bank_joins(label, dataclasses.replace(bank, token="guessed"), hashes)


def test_a_certificate_from_another_ca_is_refused(federation, tmp_path: Path):
    label, _, hashes = federation
    stranger = make_trial_credentials({"bank": ["127.0.0.1"]}, tmp_path / "theirs")["bank"]
    with pytest.raises(PeerError, match=r"TLS with label at .* failed: are both certificates "
                                        r"signed by the federation's CA"):
        _bank_joins(label, Security.from_files(stranger), hashes)


def test_a_plaintext_peer_is_refused(federation):
    label, bank, hashes = federation
    plaintext = Security(token=bank.token, insecure=True)
    # refused at once: the error is TLS's, not the timeout's ("did not answer within")
    with pytest.raises(PeerError, match=r"TLS with label at .* failed"):
        _bank_joins(label, plaintext, hashes)


def test_a_different_federation_file_stops_both_parties_naming_the_one_that_differs(federation):
    label, bank, hashes = federation
    errors: list[Exception] = []

    def label_opens() -> None:
        try:
            label.channel("s", ORDER)
        except PeerError as error:
            errors.append(error)

    waiting = threading.Thread(target=label_opens)
    waiting.start()
    with pytest.raises(PeerError, match="bank's copy of the federation file differs from label's"):
        _bank_joins(label, bank, hashes, federation_hash="edited-copy")
    waiting.join(10)
    assert [str(e) for e in errors] == [
        ("bank: bank's copy of the federation file differs from label's "
         "(hash edited-copy… against federation-h…)")]


def test_a_party_that_never_starts_fails_the_run_within_the_timeout_naming_it(federation):
    label, _, _ = federation
    with pytest.raises(PeerError,
                       match=r"bank at 127\.0\.0\.1:1 did not connect to label within 3 s"):
        label.channel("s", ORDER)


def test_a_party_whose_peer_is_down_gives_up_within_the_timeout_naming_it(federation):
    label, bank, hashes = federation
    address = f"127.0.0.1:{label.port}"
    label.close()
    with pytest.raises(PeerError, match=rf"label at {address} did not answer within 3 s"):
        _bank_joins(label, bank, hashes)


def test_a_port_another_process_holds_is_one_line_naming_the_party_and_address(federation):
    # Prepare: the label party's endpoint already listens on its port
    from splitrec_core.errors import InputError

    label, bank, hashes = federation

    # Execute / Assert: a second endpoint on that port is refused in words, not gRPC's
    with pytest.raises(InputError, match=rf"^bank's listen address 127.0.0.1:{label.port}: "
                                         r"cannot listen there: another process holds the port"):
        FlightEndpoint("bank", f"127.0.0.1:{label.port}", bank,
                       Members({"label": "127.0.0.1:1"}, hashes, "federation-hash"), QUICK)
