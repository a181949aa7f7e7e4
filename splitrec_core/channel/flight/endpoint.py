"""A party's Flight endpoint: its server, the sessions it takes part in, and reaching a peer.

The server accepts the streams later parties open and the one action, `start-run`, with which
the label party asks a serving party to join a run. Dialing a peer retries with backoff while
the peer is not up yet; every failure names the peer and what failed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import pyarrow as pa
from pyarrow import flight

from splitrec_core.channel.contract import Kind, Limits, PeerError
from splitrec_core.channel.flight.addresses import Timeouts
from splitrec_core.channel.flight.auth import Security, TokenCheck
from splitrec_core.channel.flight.channel import FlightChannel
from splitrec_core.channel.flight.stream import ACK, Link, first_line, pump
from splitrec_core.errors import InputError

START_RUN = "start-run"  # the one action: the label party asks a serving party to join a run
# (a training run, a scoring run or a move of the registry's aliases: the request's "job")
T = TypeVar("T")


class _Server(flight.FlightServerBase):
    """A party's endpoint: accepts the streams that later parties open to it."""

    def __init__(self, endpoint: FlightEndpoint, location: str, security: Security,
                 token_hashes: dict[str, str]) -> None:
        tls = {} if security.insecure else {
            "tls_certificates": [flight.CertKeyPair(security.cert, security.key)],
            "verify_client": True, "root_certificates": security.ca}
        super().__init__(location, middleware={"auth": TokenCheck(token_hashes)}, **tls)
        self._endpoint = endpoint

    def do_exchange(self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor,
                    reader: flight.MetadataRecordBatchReader,
                    writer: flight.MetadataRecordBatchWriter) -> None:
        """Take a peer's stream into the session it names, once its federation file matches."""
        caller = context.get_middleware("auth").party
        hello = json.loads(descriptor.command)
        endpoint = self._endpoint
        if hello.get("federation") != endpoint.federation_hash:
            why = (f"{caller}'s copy of the federation file differs from {endpoint.me}'s "
                   f"(hash {str(hello.get('federation'))[:12]}… against "
                   f"{endpoint.federation_hash[:12]}…)")
            endpoint.link(hello["session"], caller).fail(why)  # tells our side, if it waits
            raise flight.FlightServerError(why)
        link = endpoint.incoming(hello["session"], caller)
        writer.write_metadata(pa.py_buffer(ACK))
        link.attach(writer)
        try:
            pump(reader, link)  # until the peer has sent everything, or the stream breaks
        finally:
            link.detach(done_writing=False)  # `writer` dies with this call

    def do_action(self, context: flight.ServerCallContext, action: flight.Action) -> list[bytes]:
        """Start this party's part of a run when the caller asks (`start-run`); its answer."""
        caller = context.get_middleware("auth").party
        endpoint = self._endpoint
        if action.type != START_RUN:
            raise flight.FlightServerError(f"{endpoint.me} knows no action {action.type!r}")
        request = json.loads(action.body.to_pybytes())
        if request.get("federation") != endpoint.federation_hash:
            raise flight.FlightServerError(
                f"{caller}'s copy of the federation file differs from {endpoint.me}'s")
        if endpoint.on_start is None:
            raise flight.FlightServerError(f"{endpoint.me} is not serving (`splitrec party "
                                           f"serve`): start its part of the run by hand")
        return [endpoint.on_start(caller, str(request["job"]), str(request["run_id"])).encode()]


@dataclass(frozen=True)
class Members:
    """Whom an endpoint talks to: the federation's other parties, as its file names them.

    `addresses` maps every other party to its address (`host:port`), `token_hashes` every party
    to the SHA-256 of its token; `federation_hash` is the file's, which a peer's must equal.
    """

    addresses: dict[str, str]
    token_hashes: dict[str, str]
    federation_hash: str


class FlightEndpoint:
    """Party `me`'s Flight server plus the sessions (run stages) it takes part in.

    It listens at `listen` and talks to the federation's other `members`; `limits` bound the
    messages its sessions carry (the federation's), from before its server takes the first
    stream.
    """

    def __init__(self, me: str, listen: str, security: Security, members: Members,
                 timeouts: Timeouts = Timeouts(), limits: Limits = Limits()) -> None:
        self.me, self.security, self.peers = me, security, dict(members.addresses)
        self.federation_hash, self.timeouts, self.limits = (members.federation_hash, timeouts,
                                                            limits)
        token_hashes = members.token_hashes
        self._links: dict[tuple[str, str], Link] = {}
        self._lock = threading.Lock()
        # a list: keep every message sent
        self.recorded: list[tuple[Kind, str, bytes]] | None = None
        # serving: on_start(caller, job, run_id) starts this party's part of a run of `job`
        # (train, score, models), says how it went
        self.on_start: Callable[[str, str, str], str] | None = None
        known = {p: h for p, h in token_hashes.items() if p != me}
        try:
            self._server = _Server(self, security.location(listen).uri.decode(), security, known)
        except pa.ArrowException:  # gRPC says no more than "Server did not start properly"
            raise InputError(f"{me}'s listen address {listen}", None,
                             "cannot listen there: another process holds the port (`ss -ltnp` "
                             "shows which), or the host is not this machine's. Free it, or "
                             "give the party another port in every copy of federation.toml "
                             "(and in its party.toml's listen)") from None
        self.port = self._server.port

    def link(self, session: str, peer: str) -> Link:
        """The link to `peer` in `session`, made on first use by either side."""
        with self._lock:
            if (session, peer) not in self._links:
                self._links[(session, peer)] = self._new_link(peer)
            return self._links[(session, peer)]

    def _new_link(self, peer: str) -> Link:
        """A link to `peer` with this endpoint's limits; what waits may go untaken `recv_s`."""
        return Link(peer, self.limits, self.timeouts.recv_s)

    def incoming(self, session: str, peer: str) -> Link:
        """The link for a stream `peer` opens to us.

        It is the one our channel waits on, or a fresh one if the peer had connected before (it
        restarted, e.g. after its process was killed, and the old stream is over).
        """
        with self._lock:
            old = self._links.get((session, peer))
            if old is not None and not old.connected.is_set():
                return old
            if old is not None:
                old.fail("connected again (did it restart?)")
            fresh = self._links[(session, peer)] = self._new_link(peer)
            return fresh

    def forget(self, session: str, links: Iterable[Link]) -> None:
        """Drop `links` of `session` (not newer ones a restarted peer has opened since)."""
        done = {id(link) for link in links}
        with self._lock:
            for key in [k for k, v in self._links.items() if k[0] == session and id(v) in done]:
                del self._links[key]

    def where(self, peer: str) -> str:
        """`peer` and its address, for messages."""
        return f"{peer} at {self.peers.get(peer, '(no address)')}"

    def reach(self, peer: str,
              call: Callable[[flight.FlightClient, flight.FlightCallOptions, float], T],
              ) -> tuple[flight.FlightClient, T]:
        """Connect to `peer` and make `call(client, options, deadline)`.

        Retries with backoff while the peer is not up yet (until `connect_s`); every failure
        names the peer and what failed: its TLS, our token, its verdict, or silence.
        """
        security, timeouts = self.security, self.timeouts
        tls = {} if security.insecure else {"tls_root_certs": security.ca,
                                            "cert_chain": security.cert,
                                            "private_key": security.key}
        options = flight.FlightCallOptions(
            headers=[(b"authorization", f"Bearer {security.token}".encode())])
        deadline, pause = time.monotonic() + timeouts.connect_s, timeouts.backoff_s
        while True:
            client = flight.FlightClient(security.location(self.peers[peer]), **tls)
            try:
                return client, call(client, options, deadline)
            except flight.FlightUnauthenticatedError as error:
                client.close()
                raise PeerError(f"{self.where(peer)} refused our bearer token: "
                                f"{first_line(error)}") from None
            except flight.FlightUnavailableError as error:
                client.close()
                message = first_line(error)
                if _is_protocol_mismatch(message):
                    raise PeerError(f"TLS with {self.where(peer)} failed: are both certificates "
                                    f"signed by the federation's CA, and do both sides use TLS "
                                    f"(insecure = true on one side only?): {message}") from None
                if time.monotonic() + pause > deadline:
                    raise PeerError(f"{self.where(peer)} did not answer within "
                                    f"{timeouts.connect_s:.0f} s: {message}") from None
                time.sleep(pause)
                pause = min(2 * pause, timeouts.backoff_max_s)
            except flight.FlightError as error:
                client.close()
                raise PeerError(f"{self.where(peer)} refused: {first_line(error)}") from None
            except BaseException:
                client.close()
                raise

    def start_run(self, peer: str, run_id: str, job: str = "train") -> str:
        """Ask `peer` (serving: `on_start`) to start its part of run `run_id` of `job`.

        Returns its answer.
        """
        body = json.dumps({"run_id": run_id, "job": job,
                           "federation": self.federation_hash}).encode()

        def ask(client: flight.FlightClient, options: flight.FlightCallOptions,
                deadline: float) -> str:
            answers = client.do_action(flight.Action(START_RUN, body), options)
            return "; ".join(answer.body.to_pybytes().decode() for answer in answers)

        client, answer = self.reach(peer, ask)
        client.close()
        return answer

    def channel(self, session: str, order: list[str], hub: str | None = None) -> FlightChannel:
        """Open `session` with the parties in `order` (which includes us).

        Dial the earlier parties, wait for the later ones to dial us. With a `hub`, the others
        connect to it alone (a star: no stream, and no exposure, between parties that exchange
        nothing).
        """
        return FlightChannel(self, session, order, hub)

    def sole_channel(self, session: str, order: list[str]) -> FlightChannel:
        """`channel` for an endpoint that serves this one session: closing it stops the server."""
        try:
            channel = self.channel(session, order)
        except BaseException:
            self.close()
            raise
        channel.then_close = self
        return channel

    def close(self, wait_s: float = 10.0) -> None:
        """Stop serving: wait up to `wait_s` for streams still open.

        A hung peer cannot hold this process up.
        """
        stopping = threading.Thread(target=self._server.shutdown, daemon=True)
        stopping.start()
        stopping.join(wait_s)

    def __enter__(self) -> FlightEndpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_protocol_mismatch(message: str) -> bool:
    """Whether TLS failed, or the peer hung up at once.

    Then one side speaks TLS and the other does not, or a certificate is not the federation
    CA's (a peer that is down refuses the connection).
    """
    lowered = message.lower()
    return any(word in lowered for word in ("handshake", "ssl", "certificate", "socket closed"))
