"""Trial credentials for a federation: a CA, one TLS certificate per party, one bearer token each.

A party proves two things when it connects: that the federation's CA signed its certificate
(mutual TLS) and that it holds its own token (checked by the peer's server against the token's
SHA-256 in the federation file, so the shared file lets nobody impersonate anybody). Real
deployments bring their own CA; `make_trial_credentials` is for trials and tests.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from splitrec_core.io import write_bytes

VALID_DAYS = 365


def token_sha256(token: str) -> str:
    """What the federation file holds of a party's token: its SHA-256, hex."""
    return hashlib.sha256(token.strip().encode()).hexdigest()


@dataclass(frozen=True)
class PartyCredentials:
    """Where one party's credential files are (PEM files and a token file)."""

    ca: Path
    cert: Path
    key: Path
    token: Path

    def token_sha256(self) -> str:
        """The hash the federation file records for this party."""
        return token_sha256(self.token.read_text())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "splitrec trial"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _alt_names(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def make_ca(common_name: str) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    """A self-signed CA certificate (PEM) and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), key


def make_party_cert(party: str, hosts: list[str], ca_pem: bytes,
                    ca_key: ec.EllipticCurvePrivateKey) -> tuple[bytes, bytes]:
    """A certificate for `party`, valid as server and client for `hosts`; (cert PEM, key PEM)."""
    ca = x509.load_pem_x509_certificate(ca_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(party)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_alt_names(hosts), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH,
                                                  x509.ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def make_trial_credentials(parties: dict[str, list[str]], out_dir: Path,
                           ca_name: str = "splitrec trial CA") -> dict[str, PartyCredentials]:
    """A fresh CA and, for each party, a certificate, key and token in `out_dir/<party>/`.

    `parties` maps each party's name to its host names. The CA's key is not kept: no certificate
    can be added later by accident.
    """
    ca_pem, ca_key = make_ca(ca_name)
    made = {}
    for party, hosts in parties.items():
        cert, key = make_party_cert(party, hosts, ca_pem, ca_key)
        folder = out_dir / party
        made[party] = PartyCredentials(
            ca=write_bytes(ca_pem, folder / "ca.pem"), cert=write_bytes(cert, folder / "cert.pem"),
            key=write_bytes(key, folder / "key.pem", private=True),
            token=write_bytes(secrets.token_urlsafe(32).encode(), folder / "token", private=True))
    return made
