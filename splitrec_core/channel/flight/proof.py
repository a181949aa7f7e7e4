"""A caller's proof that it holds its certificate's key: what binds its token to its certificate.

A bearer token reaches every party its owner calls, and pyarrow's Flight server does not show a
handler the certificate a caller presented over TLS: with the token and TLS alone, a member
could pass as any party whose token it has received. So every call also carries the caller's
certificate and its signature over (caller, the party called, the time). The called party checks
that the federation's CA issued that certificate, that its common name is the party the token
names, and that the signature is fresh and addressed to it, so it cannot be replayed to another
party. Certificates must name their party as common name (`splitrec certs` makes them so).
"""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from splitrec_core.errors import InputError

HEADER = "x-splitrec-proof"
FRESH_S = 300.0  # how far a caller's clock may be from ours


def _signed(caller: str, called: str, at: int) -> bytes:
    return f"splitrec call|{caller}|{called}|{at}".encode()


def prove(cert_pem: bytes, key_pem: bytes, caller: str, called: str) -> str:
    """The header value `caller` sends with a call to `called`: certificate, time, signature."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    at = int(time.time())
    message = _signed(caller, called, at)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(message, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(message)
    else:
        raise InputError(f"{caller}'s key", None, "is not an EC, RSA or Ed25519 key: a "
                                                  "certificate key splitrec can sign with")
    return ".".join([base64.urlsafe_b64encode(cert_pem).decode(), str(at),
                     base64.urlsafe_b64encode(signature).decode()])


class ProofCheck:
    """Checks the proofs of calls to party `me`, against the federation's CA."""

    def __init__(self, ca_pem: bytes, me: str) -> None:
        self._ca, self._me = x509.load_pem_x509_certificate(ca_pem), me

    def why_not(self, value: str | None, party: str) -> str | None:
        """Why `value` does not prove the caller is `party` (None: it does)."""
        try:
            return self._why_not(value, party)
        except Exception as error:  # noqa: BLE001 - a peer's header must not break the server
            return f"its proof cannot be checked: {type(error).__name__}"

    def _why_not(self, value: str | None, party: str) -> str | None:
        if not value:
            return f"no proof that the caller holds {party}'s certificate key ({HEADER})"
        try:
            cert_b64, at_text, signature_b64 = value.split(".")
            cert = x509.load_pem_x509_certificate(base64.urlsafe_b64decode(cert_b64))
            at, signature = int(at_text), base64.urlsafe_b64decode(signature_b64)
        except ValueError:
            return f"its {HEADER} header is not one splitrec sends"
        try:
            cert.verify_directly_issued_by(self._ca)
        except (ValueError, TypeError, InvalidSignature):
            return "the certificate in its proof is not the federation CA's"
        if not cert.not_valid_before_utc <= datetime.now(UTC) <= cert.not_valid_after_utc:
            return "the certificate in its proof is not valid now"
        names = _common_names(cert)
        if names != [party]:
            return f"its token is {party}'s, but its certificate is {', '.join(map(str, names))}'s"
        if abs(time.time() - at) > FRESH_S:
            return (f"its proof is {abs(time.time() - at):.0f} s from {self._me}'s clock (at most "
                    f"{FRESH_S:.0f} s: are both clocks set?)")
        return _verify(cert, signature, _signed(party, self._me, at))


def common_names(cert_pem: bytes) -> list[str]:
    """The common names a certificate (PEM) gives its subject: a party's, one."""
    return _common_names(x509.load_pem_x509_certificate(cert_pem))


def _common_names(cert: x509.Certificate) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def _verify(cert: x509.Certificate, signature: bytes, message: bytes) -> str | None:
    """None if `cert`'s key signed `message`, else why not."""
    key = cert.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
        else:
            return "the certificate in its proof has no EC, RSA or Ed25519 key"
    except InvalidSignature:
        return "its proof is not signed by its certificate's key for this party now"
    return None
