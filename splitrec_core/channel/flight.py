"""Parties on their own hosts: Arrow Flight with mutual TLS and a bearer token per party.

Every party runs one `FlightEndpoint` (a Flight server at its address). For each stage of a run
the parties open a `FlightChannel`: of every pair that talks, the party later in the order dials
the earlier one (so the label party, first, dials nobody; with parties apart only it and each
feature party talk) and both directions share that one long-lived `DoExchange` stream. A message is the same Arrow IPC stream the other channels carry,
sent as one Flight message's app metadata behind its kind (`kind\\n<IPC bytes>`): one stream
carries tables of any schema, and the counts per kind equal the other channels'.

Who may connect: a peer whose certificate the federation's CA signed (mutual TLS) and whose
bearer token hashes to the SHA-256 the federation file lists for it; both must be in the same
session of the same federation (the federation file's hash). Plaintext only with
`insecure = True`. A peer that does not come within `connect_s`, or a message that does not come
within `recv_s`, stops the stage with an error naming the peer, never a hang.
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
from pyarrow import flight

from splitrec_core.certs import PartyCredentials, make_trial_credentials, token_sha256
from splitrec_core.channel.base import ChannelStats, Kind, message_bytes
from splitrec_core.channel.local import POLL_S
from splitrec_core.errors import InputError

LOOPBACK_FEDERATION = "loopback-trial"  # what a one-host trial's parties compare on connecting
START_RUN = "start-run"  # the one action: the label party asks a serving party to join a run
# (a training run, a scoring run or a move of the registry's aliases: the request's "job")
ACK = b"accepted"  # the first message on a stream: the peer let us in
BYE = b"bye"       # the last, from the party that was dialed: it is done with the session
T = TypeVar("T")


class PeerError(RuntimeError):
    """A peer could not be reached, refused us, differs from us, or went silent; names the peer."""


@dataclass(frozen=True)
class Security:
    """One party's credentials: the federation CA, its own certificate, key and token (PEM bytes)."""

    token: str = field(repr=False)
    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = field(default=None, repr=False)
    insecure: bool = False

    @classmethod
    def from_files(cls, files: PartyCredentials, insecure: bool = False) -> Security:
        """Read a party's credential files (with `insecure`, plaintext: the token alone); a
        missing file is an error naming it."""
        needed = [files.token] if insecure else [files.token, files.ca, files.cert, files.key]
        for path in needed:
            if not path.exists():
                raise InputError(path, None, "credential file does not exist (`splitrec certs` "
                                             "makes trial ones)")
        token = files.token.read_text().strip()
        if insecure:
            return cls(token=token, insecure=True)
        return cls(token=token, ca=files.ca.read_bytes(), cert=files.cert.read_bytes(),
                   key=files.key.read_bytes())

    def location(self, address: str) -> flight.Location:
        """`host:port` as this party's scheme: TLS unless insecure."""
        host, port = split_address(address)
        return (flight.Location.for_grpc_tcp(host, port) if self.insecure
                else flight.Location.for_grpc_tls(host, port))


def split_address(address: str) -> tuple[str, int]:
    """`host:port` → (host, port)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"address {address!r} is not host:port")
    return host, int(port)


@dataclass(frozen=True)
class Timeouts:
    """How long to wait, and how to retry, before naming a peer that does not answer."""

    connect_s: float = 120.0     # for a peer to accept our stream, or to open its stream to us
    recv_s: float = 600.0        # for one message
    backoff_s: float = 0.5       # first pause between dial attempts, doubling ...
    backoff_max_s: float = 10.0  # ... up to this


class _Caller(flight.ServerMiddleware):
    """The party a call's bearer token belongs to."""

    def __init__(self, party: str) -> None:
        self.party = party


class _TokenCheck(flight.ServerMiddlewareFactory):
    """Refuses a call unless its bearer token hashes to a listed peer's token hash."""

    def __init__(self, token_hashes: dict[str, str]) -> None:
        self._party_by_hash = {digest: party for party, digest in token_hashes.items()}

    def start_call(self, info: flight.CallInfo, headers: dict) -> _Caller:
        values = headers.get("authorization", [])
        value = values[0].decode() if values and isinstance(values[0], bytes) else (values or [""])[0]
        if not value.startswith("Bearer "):
            raise flight.FlightUnauthenticatedError("no bearer token")
        party = self._party_by_hash.get(token_sha256(value.removeprefix("Bearer ")))
        if party is None:
            raise flight.FlightUnauthenticatedError("the bearer token is not one of this "
                                                    "federation's parties'")
        return _Caller(party)


@dataclass
class _Link:
    """Our side of the stream with one peer in one session: its inbox and the way out to it.

    The stream's writer is used by the party's thread (to send) and by the thread reading the
    stream (to end it when the peer says goodbye), so every use is under `lock`, and once the
    stream is over the writer is dropped: a late send is a clear error, not a write to a closed
    call.
    """

    peer: str
    inbox: dict[str, queue.Queue[memoryview]] = field(
        default_factory=lambda: {kind.value: queue.Queue() for kind in Kind})
    failure: str | None = None  # why the stream is over, if it is
    connected: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    writer: object = None       # the stream's writer while it is up

    def attach(self, writer: object) -> None:
        with self.lock:
            self.writer = writer
        self.connected.set()

    def write(self, message: bytes) -> None:
        with self.lock:
            if self.writer is None:
                raise PeerError(f"{self.peer} {self.failure or 'is not connected'}")
            self.writer.write_metadata(pa.py_buffer(message))  # type: ignore[attr-defined]

    def detach(self, done_writing: bool) -> None:
        """Stop writing (telling the peer so, if `done_writing`: our half of the stream ends)."""
        with self.lock:
            writer, self.writer = self.writer, None
            if done_writing and writer is not None:
                try:
                    writer.done_writing()  # type: ignore[attr-defined]
                except (flight.FlightError, pa.ArrowException, OSError):
                    pass  # the peer is gone already; there is nothing left to tell it

    def deliver(self, message: memoryview) -> None:
        head = bytes(message[:32])
        kind = head[: head.find(b"\n")].decode(errors="replace")
        if b"\n" not in head or kind not in self.inbox:
            self.fail(f"sent a message of unknown kind {kind!r}")
            return
        self.inbox[kind].put(message[len(kind) + 1:])

    def fail(self, why: str) -> None:
        if self.failure is None:
            self.failure = why
        self.connected.set()


class _Server(flight.FlightServerBase):
    """A party's endpoint: accepts the streams that later parties open to it."""

    def __init__(self, endpoint: FlightEndpoint, location: str, security: Security,
                 token_hashes: dict[str, str]) -> None:
        tls = {} if security.insecure else {
            "tls_certificates": [flight.CertKeyPair(security.cert, security.key)],
            "verify_client": True, "root_certificates": security.ca}
        super().__init__(location, middleware={"auth": _TokenCheck(token_hashes)}, **tls)
        self._endpoint = endpoint

    def do_exchange(self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor,
                    reader: flight.MetadataRecordBatchReader,
                    writer: flight.MetadataRecordBatchWriter) -> None:
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
            _pump(reader, link)  # until the peer has sent everything, or the stream breaks
        finally:
            link.detach(done_writing=False)  # `writer` dies with this call


    def do_action(self, context: flight.ServerCallContext, action: flight.Action) -> list[bytes]:
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


def _pump(reader: flight.MetadataRecordBatchReader, link: _Link) -> None:
    """Move every message arriving from `link.peer` into its inbox until the stream ends."""
    try:
        while True:
            chunk = reader.read_chunk()
            if chunk.app_metadata is None:
                continue
            message = memoryview(chunk.app_metadata)
            if message == BYE:  # the peer we dialed is done: end our half too
                link.fail("ended the session")
                link.detach(done_writing=True)
            else:
                link.deliver(message)
    except StopIteration:
        link.fail("ended the session")
    except (flight.FlightError, pa.ArrowException, OSError) as error:
        link.fail(f"broke the stream: {_first_line(error)}")


class FlightEndpoint:
    """Party `me`'s Flight server plus the sessions (run stages) it takes part in.

    `peers` maps every other party to its address (`host:port`); `token_hashes` maps them to the
    SHA-256 of their tokens, from the federation file.
    """

    def __init__(self, me: str, listen: str, security: Security, peers: dict[str, str],
                 token_hashes: dict[str, str], federation_hash: str,
                 timeouts: Timeouts = Timeouts()) -> None:
        self.me, self.security, self.peers = me, security, dict(peers)
        self.federation_hash, self.timeouts = federation_hash, timeouts
        self._links: dict[tuple[str, str], _Link] = {}
        self._lock = threading.Lock()
        self.recorded: list[tuple[Kind, str, bytes]] | None = None  # a list: keep every message sent
        # serving: on_start(caller, job, run_id) starts this party's part of a run of `job`
        # (train, score, models), says how it went
        self.on_start: Callable[[str, str, str], str] | None = None
        known = {p: h for p, h in token_hashes.items() if p != me}
        self._server = _Server(self, security.location(listen).uri.decode(), security, known)
        self.port = self._server.port

    def link(self, session: str, peer: str) -> _Link:
        """The link to `peer` in `session`, made on first use by either side."""
        with self._lock:
            return self._links.setdefault((session, peer), _Link(peer))

    def incoming(self, session: str, peer: str) -> _Link:
        """The link for a stream `peer` opens to us: the one our channel waits on, or a fresh
        one if the peer had connected before (it restarted, e.g. after its process was killed,
        and the old stream is over)."""
        with self._lock:
            old = self._links.get((session, peer))
            if old is None or not old.connected.is_set():
                return self._links.setdefault((session, peer), _Link(peer))
            old.fail("connected again (did it restart?)")
            fresh = self._links[(session, peer)] = _Link(peer)
            return fresh

    def forget(self, session: str, links: Iterable[_Link]) -> None:
        """Drop `links` of `session` (not newer ones a restarted peer has opened since)."""
        done = {id(link) for link in links}
        with self._lock:
            for key in [k for k, v in self._links.items() if k[0] == session and id(v) in done]:
                del self._links[key]

    def where(self, peer: str) -> str:
        """`peer` and its address, for messages."""
        return f"{peer} at {self.peers.get(peer, '(no address)')}"

    def reach(self, peer: str, call: Callable[[flight.FlightClient, flight.FlightCallOptions, float], T],
              ) -> tuple[flight.FlightClient, T]:
        """Connect to `peer` and make `call(client, options, deadline)`, retrying with backoff
        while the peer is not up yet (until `connect_s`); every failure names the peer and what
        failed: its TLS, our token, its verdict, or silence."""
        security, timeouts = self.security, self.timeouts
        tls = {} if security.insecure else {"tls_root_certs": security.ca,
                                            "cert_chain": security.cert, "private_key": security.key}
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
                                f"{_first_line(error)}") from None
            except flight.FlightUnavailableError as error:
                client.close()
                message = _first_line(error)
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
                raise PeerError(f"{self.where(peer)} refused: {_first_line(error)}") from None
            except BaseException:
                client.close()
                raise

    def start_run(self, peer: str, run_id: str, job: str = "train") -> str:
        """Ask `peer` (serving: `on_start`) to start its part of run `run_id` of `job`; its
        answer."""
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
        """Open `session` with the parties in `order` (which includes us): dial the earlier
        parties, wait for the later ones to dial us. With a `hub`, the others connect to it
        alone (a star: no stream, and no exposure, between parties that exchange nothing)."""
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
        """Stop serving: wait up to `wait_s` for streams still open (a hung peer cannot hold
        this process up)."""
        stopping = threading.Thread(target=self._server.shutdown, daemon=True)
        stopping.start()
        stopping.join(wait_s)

    def __enter__(self) -> FlightEndpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FlightChannel:
    """Party `me`'s view of one session over Flight; counts what it sends (the `Channel` protocol)."""

    def __init__(self, endpoint: FlightEndpoint, session: str, order: list[str],
                 hub: str | None = None) -> None:
        self.me, self._endpoint, self._session = endpoint.me, endpoint, session
        self._stats, self._received = ChannelStats(), ChannelStats()
        self._links: dict[str, _Link] = {}
        self._dialed: dict[str, tuple[flight.FlightClient, threading.Thread]] = {}
        self.then_close: FlightEndpoint | None = None  # an endpoint to stop with the channel
        mine = order.index(self.me)
        peers = [p for p in order if p != self.me and hub in (None, p, self.me)]
        try:
            for peer in peers:
                if order.index(peer) < mine:
                    self._links[peer] = self._dial(peer)
            for peer in peers:
                if order.index(peer) > mine:
                    self._links[peer] = self._await(peer)
        except BaseException:
            self.close()
            raise

    def _dial(self, peer: str) -> _Link:
        """Open our stream to `peer` (retrying with backoff while it is not up yet) and start
        moving what arrives on it into the link's inbox."""
        endpoint = self._endpoint
        hello = json.dumps({"session": self._session, "federation": endpoint.federation_hash})

        def open_stream(client: flight.FlightClient, options: flight.FlightCallOptions,
                        deadline: float) -> tuple:
            writer, reader = client.do_exchange(flight.FlightDescriptor.for_command(hello), options)
            try:
                first = _read_with_deadline(reader, deadline)
            except BaseException:
                _hang_up(writer)
                raise
            if first is None or bytes(first) != ACK:
                _hang_up(writer)
                raise PeerError(f"{endpoint.where(peer)} did not accept our stream")
            return writer, reader

        client, (writer, reader) = endpoint.reach(peer, open_stream)
        link = endpoint.link(self._session, peer)
        link.attach(writer)
        pump = threading.Thread(target=_pump, args=(reader, link), daemon=True,
                                name=f"flight-{self.me}-from-{peer}")
        pump.start()
        self._dialed[peer] = (client, pump)
        return link

    def _await(self, peer: str) -> _Link:
        """Wait for `peer` to open its stream to us."""
        link = self._links[peer] = self._endpoint.link(self._session, peer)
        if not link.connected.wait(self._endpoint.timeouts.connect_s):
            raise PeerError(f"{self._endpoint.where(peer)} did not connect to {self.me} within "
                            f"{self._endpoint.timeouts.connect_s:.0f} s: is it running?")
        if link.failure:
            raise PeerError(f"{peer}: {link.failure}")
        return link

    def send(self, kind: Kind, to: str, table: pa.Table) -> None:
        """Send `table` to party `to`."""
        link = self._links[to]
        payload = message_bytes(kind, table)
        message = kind.value.encode() + b"\n" + payload.to_pybytes()
        self._stats.add(kind, payload.size)
        if self._endpoint.recorded is not None:
            self._endpoint.recorded.append((kind, to, message))
        try:
            link.write(message)
        except (flight.FlightError, pa.ArrowException, OSError) as error:
            raise PeerError(f"sending '{kind.value}' to {self._endpoint.where(to)} failed: "
                            f"{_first_line(error)}") from None

    def recv(self, kind: Kind, frm: str) -> pa.Table:
        """Receive the next `kind` message from `frm`."""
        link, timeouts = self._links[frm], self._endpoint.timeouts
        inbox, deadline = link.inbox[kind.value], time.monotonic() + timeouts.recv_s
        while True:
            try:
                message = inbox.get(timeout=POLL_S)
                self._received.add(kind, len(message))
                return pa.ipc.open_stream(pa.py_buffer(message)).read_all()
            except queue.Empty:
                if link.failure and inbox.empty():  # (a message may land just before the end)
                    raise PeerError(f"{self.me} lost {self._endpoint.where(frm)} while waiting for "
                                    f"'{kind.value}': {link.failure}") from None
                if time.monotonic() > deadline:
                    raise PeerError(f"{self.me} waited {timeouts.recv_s:.0f} s for "
                                    f"'{kind.value}' from {self._endpoint.where(frm)}") from None

    def stats(self) -> ChannelStats:
        """What this party sent."""
        return self._stats

    def received(self) -> ChannelStats:
        """What this party received (at the label party, with `stats`, all a star's traffic)."""
        return self._received

    def close(self) -> None:
        """End the session: tell the parties that dialed us goodbye; end our half of the streams
        we opened and wait (up to `connect_s`) until the peer has read everything we sent."""
        for peer, link in self._links.items():
            if peer not in self._dialed:
                with contextlib.suppress(PeerError, flight.FlightError, pa.ArrowException):
                    link.write(BYE)
                link.detach(done_writing=False)
        for peer, (client, pump) in self._dialed.items():
            self._links[peer].detach(done_writing=True)
            pump.join(self._endpoint.timeouts.connect_s)
            client.close()
        self._endpoint.forget(self._session, self._links.values())
        if self.then_close is not None:
            self.then_close.close()

    def __enter__(self) -> FlightChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _hang_up(writer: flight.FlightStreamWriter) -> None:
    """End our side of a stream a peer refused; a peer already gone has nothing to flush."""
    try:
        writer.done_writing()
        writer.close()
    except (flight.FlightError, pa.ArrowException, OSError):
        pass


def _read_with_deadline(reader: flight.FlightStreamReader, deadline: float) -> memoryview | None:
    """The first message on a fresh stream, cancelling the read at `deadline` (Flight has no
    per-read timeout)."""
    watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), reader.cancel)
    watchdog.start()
    try:
        chunk = reader.read_chunk()
        return None if chunk.app_metadata is None else memoryview(chunk.app_metadata)
    except flight.FlightCancelledError:
        raise flight.FlightUnavailableError("no answer before the deadline") from None
    finally:
        watchdog.cancel()


def _first_line(error: BaseException) -> str:
    """The part of a Flight error a person needs (gRPC appends its debug context)."""
    text = (str(error).strip() or type(error).__name__).splitlines()[0]
    return text.split(". Detail:")[0].split(". gRPC client debug context")[0]


def _is_protocol_mismatch(message: str) -> bool:
    """TLS failed, or the peer hung up at once: one side speaks TLS and the other does not, or
    a certificate is not the federation CA's (a peer that is down refuses the connection)."""
    lowered = message.lower()
    return any(word in lowered for word in ("handshake", "ssl", "certificate", "socket closed"))


@dataclass(frozen=True)
class LoopbackSeat:
    """What opens one party's Flight channel in a process of its own on this machine (picklable)."""

    me: str
    order: list[str]
    addresses: dict[str, str]
    credentials: PartyCredentials
    token_hashes: dict[str, str]
    session: str
    timeouts: Timeouts = Timeouts()

    def __call__(self) -> FlightChannel:
        peers = {p: a for p, a in self.addresses.items() if p != self.me}
        endpoint = FlightEndpoint(self.me, self.addresses[self.me],
                                  Security.from_files(self.credentials), peers, self.token_hashes,
                                  LOOPBACK_FEDERATION, self.timeouts)
        return endpoint.sole_channel(self.session, self.order)


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` ports nobody listens on now (the OS picks them; a race is possible but rare)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def loopback_seats(order: list[str], folder: Path, session: str,
                   timeouts: Timeouts = Timeouts()) -> dict[str, LoopbackSeat]:
    """A trial federation on 127.0.0.1: fresh credentials in `folder`, a free port per party."""
    credentials = make_trial_credentials({p: ["127.0.0.1", "localhost"] for p in order}, folder)
    addresses = {p: f"127.0.0.1:{port}" for p, port in zip(order, free_ports(len(order)), strict=True)}
    hashes = {p: c.token_sha256() for p, c in credentials.items()}
    return {p: LoopbackSeat(p, order, addresses, credentials[p], hashes, session, timeouts)
            for p in order}
