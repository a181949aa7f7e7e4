"""Who a party is on Flight: its credentials, and the check that a caller is one of its peers."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyarrow import flight

from splitrec_core.certs import PartyCredentials, token_sha256
from splitrec_core.channel.flight.addresses import split_address
from splitrec_core.channel.flight.proof import HEADER, ProofCheck, common_names, prove
from splitrec_core.errors import InputError


@dataclass(frozen=True)
class Security:
    """One party's credentials: the federation CA, its own certificate, key, token (PEM bytes)."""

    token: str = field(repr=False)
    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = field(default=None, repr=False)
    insecure: bool = False

    @classmethod
    def from_files(cls, files: PartyCredentials, insecure: bool = False,
                   party: str | None = None) -> Security:
        """Read a party's credential files (with `insecure`, plaintext: the token alone).

        A missing file is an error naming it, and so is a certificate that does not name
        `party` as its common name (its peers would refuse every call: `proof`).
        """
        needed = [files.token] if insecure else [files.token, files.ca, files.cert, files.key]
        for path in needed:
            if not path.exists():
                raise InputError(path, None, "credential file does not exist (`splitrec certs` "
                                             "makes trial ones)")
        token = files.token.read_text().strip()
        if insecure:
            return cls(token=token, insecure=True)
        cert = files.cert.read_bytes()
        names = common_names(cert)
        if party is not None and names != [party]:
            raise InputError(files.cert, None, f"the certificate names {names or 'nobody'} as "
                                               f"its common name, not '{party}': a party's "
                                               f"peers know it by that name (`splitrec certs` "
                                               f"makes such certificates)")
        return cls(token=token, ca=files.ca.read_bytes(), cert=cert, key=files.key.read_bytes())

    def call_headers(self, me: str, called: str) -> list[tuple[bytes, bytes]]:
        """The headers of a call from party `me` to `called`: the token, and (TLS) the proof."""
        headers = [(b"authorization", f"Bearer {self.token}".encode())]
        if not self.insecure:
            assert self.cert is not None and self.key is not None  # read with TLS
            headers.append((HEADER.encode(), prove(self.cert, self.key, me, called).encode()))
        return headers

    def location(self, address: str) -> flight.Location:
        """`host:port` as this party's scheme: TLS unless insecure."""
        host, port = split_address(address)
        return (flight.Location.for_grpc_tcp(host, port) if self.insecure
                else flight.Location.for_grpc_tls(host, port))


class Caller(flight.ServerMiddleware):
    """The party a call's bearer token belongs to; None (and why) if it belongs to none."""

    def __init__(self, party: str | None, why: str = "") -> None:
        self.party, self.why = party, why


class TokenCheck(flight.ServerMiddlewareFactory):
    """Names the listed peer whose token hashes to a call's bearer token, if the call proves it.

    With TLS, the call must also carry that peer's proof of its certificate key (`proof`). It
    does not refuse the call itself: the server's handler does, where it knows the caller's
    address to log (`server.Server`).
    """

    def __init__(self, token_hashes: dict[str, str], proofs: ProofCheck | None = None) -> None:
        self._party_by_hash = {digest: party for party, digest in token_hashes.items()}
        self._proofs = proofs

    def start_call(self, info: flight.CallInfo, headers: dict) -> Caller:
        """The caller, named by its token and its proof, or why it is no listed party."""
        value = _header(headers, "authorization")
        if not value.startswith("Bearer "):
            return Caller(None, "no bearer token")
        party = self._party_by_hash.get(token_sha256(value.removeprefix("Bearer ")))
        if party is None:
            return Caller(None, "the bearer token is not one of this federation's parties'")
        why = None if self._proofs is None else self._proofs.why_not(_header(headers, HEADER),
                                                                      party)
        return Caller(None, why) if why else Caller(party)


def _header(headers: dict, name: str) -> str:
    """A call's first `name` header as text ("" if it has none)."""
    values = headers.get(name, [])
    first = values[0] if values else ""
    return first.decode(errors="replace") if isinstance(first, bytes) else str(first)
