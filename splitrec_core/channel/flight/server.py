"""A party's Flight server: who it lets in, and how it turns everyone else away.

A call is let in only from a peer whose bearer token the federation file lists (`auth`), with
the same federation file, into a session this party has opened (or a run it has started) and
of which the caller is a member, and with no more than `MAX_STREAMS_PER_PEER` streams of that
peer open at once. Everything else is a `Refusal`: the caller gets one line saying why (never
this process's traceback) and this party logs it once, with the caller's address.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import psutil
import pyarrow as pa
from pyarrow import flight

from splitrec_core.channel.flight.auth import Security, TokenCheck
from splitrec_core.channel.flight.proof import ProofCheck
from splitrec_core.channel.flight.stream import ACK, Link, pump

log = logging.getLogger("splitrec_core.channel.flight")

START_RUN = "start-run"  # the one action: the label party asks a serving party to join a run
# (a training run, a scoring run or a move of the registry's aliases: the request's "job")
MAX_STREAMS_PER_PEER = 4  # a run has one stream per stage open at a time; a restart one more
T = TypeVar("T")


class Refusal(Exception):
    """Why the server turns a call away; `answer` is the Flight error the caller receives.

    A caller told `FlightUnavailableError` dials again (with backoff, until `connect_s`): the
    session it names may open here soon.
    """

    def __init__(self, why: str, answer: type[flight.FlightError] = flight.FlightServerError,
                 ) -> None:
        super().__init__(why)
        self.answer = answer


class Host(Protocol):
    """What the server needs of the endpoint it serves (`endpoint.FlightEndpoint`)."""

    me: str
    federation_hash: str
    on_start: Callable[[str, str, str], str] | None

    def admit(self, session: str, caller: str) -> Link:
        """The link for a stream `caller` opens in `session`, or a `Refusal`."""

    def fail_waiting(self, session: str, caller: str, why: str) -> None:
        """Tell our side of `session`, if it waits for `caller`, why `caller` cannot join."""


def _answering(handler: Callable[..., T]) -> Callable[..., T]:
    """Run a Flight handler; a refusal or any other error goes back as one line, logged here."""

    @functools.wraps(handler)
    def answer(server: Server, context: flight.ServerCallContext, *args: Any) -> T:
        try:
            return handler(server, context, *args)
        except Refusal as refusal:
            server.refused(context, handler.__name__, str(refusal))
            raise refusal.answer(str(refusal)) from None
        except Exception as error:  # noqa: BLE001 - a peer's request must not see our traceback
            why = (str(error).strip() or type(error).__name__).splitlines()[0]
            server.refused(context, handler.__name__, why)
            raise flight.FlightServerError(why) from None

    return answer


def _hello(descriptor: flight.FlightDescriptor) -> tuple[str, str]:
    """The session and federation hash a stream's descriptor names (a peer may send anything)."""
    try:
        hello = json.loads(descriptor.command)
    except (TypeError, ValueError):
        raise Refusal("its stream's descriptor is not the JSON hello splitrec sends") from None
    if not (isinstance(hello, dict) and isinstance(hello.get("session"), str)
            and isinstance(hello.get("federation"), str)):
        raise Refusal("its hello does not name a session and a federation")
    return hello["session"], hello["federation"]


def _not_offered(method: str) -> Callable[..., None]:
    """A handler for the Flight `method` splitrec does not offer: a stranger is refused as one."""

    def refuse(server: Server, context: flight.ServerCallContext, *_: object) -> None:
        server.caller(context)
        raise Refusal(f"{server.host.me} offers no {method}")

    refuse.__name__ = refuse.__qualname__ = method  # as the refusal's log line names it
    return _answering(refuse)


class Server(flight.FlightServerBase):
    """A party's endpoint: accepts the streams later parties open to it, and `start-run`."""

    def __init__(self, host: Host, location: str, security: Security,
                 token_hashes: dict[str, str]) -> None:
        tls = {} if security.insecure else {
            "tls_certificates": [flight.CertKeyPair(security.cert, security.key)],
            "verify_client": True, "root_certificates": security.ca}
        proofs = None if security.ca is None else ProofCheck(security.ca, host.me)
        super().__init__(location, middleware={"auth": TokenCheck(token_hashes, proofs)}, **tls)
        self.host = host
        self._streams: Counter[str] = Counter()  # open streams per caller
        self._connections: Counter[str] = Counter()  # open streams per caller's address
        self._open: dict[int, tuple[str, Link]] = {}  # each open stream: its address, its link
        self._lock = threading.Lock()

    def cut_open_streams(self) -> int:
        """Close the connections of every stream still open; how many connections were cut.

        A stream's handler reads until its peer ends the stream, and pyarrow can neither cancel
        a handler nor give `shutdown` a deadline: a peer that holds its stream open (or vanished
        without closing it) would hold this process up, even at its exit. Shutting the
        connection's socket down ends the read, so the handler returns.
        """
        with self._lock:
            addresses = [address for address, n in self._connections.items() if n > 0]
        return sum(cut_connection(address) for address in addresses)

    def cut_idle_streams(self, idle_s: float) -> int:
        """Cut every stream nothing has crossed, either way, for over `idle_s`; how many.

        A run's stream is never that quiet: the party waiting on it gives up after `recv_s`.
        """
        now = time.monotonic()
        with self._lock:
            idle = [(address, link) for address, link in self._open.values()
                    if now - link.last_heard > idle_s]
        for address, link in idle:
            log.warning("%s cut the stream of %s at %s: nothing crossed it for %.0f s",
                        self.host.me, link.peer, address, idle_s)
            link.fail(f"sent nothing for {idle_s:.0f} s, so its stream was cut")
            cut_connection(address)
        return len(idle)

    def refused(self, context: flight.ServerCallContext, call: str, why: str) -> None:
        """Log a refusal once, naming the caller (as its token says, if it has one) and address."""
        caller = getattr(context.get_middleware("auth"), "party", None) or "a caller"
        log.warning("%s refused %s from %s at %s: %s", self.host.me, call, caller,
                    context.peer(), why)

    def caller(self, context: flight.ServerCallContext) -> str:
        """The federation party whose token the call carries, else a refusal."""
        auth = context.get_middleware("auth")
        if auth is None or auth.party is None:
            why = auth.why if auth is not None else "no bearer token"
            raise Refusal(why, flight.FlightUnauthenticatedError)
        return str(auth.party)

    @_answering
    def do_exchange(self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor,
                    reader: flight.MetadataRecordBatchReader,
                    writer: flight.MetadataRecordBatchWriter) -> None:
        """Take a peer's stream into the session it names, once it may join it."""
        caller, host = self.caller(context), self.host
        session, federation = _hello(descriptor)
        if federation != host.federation_hash:
            why = (f"{caller}'s copy of the federation file differs from {host.me}'s (hash "
                   f"{federation[:12]}… against {host.federation_hash[:12]}…)")
            host.fail_waiting(session, caller, why)
            raise Refusal(why)
        with self._lock:
            if self._streams[caller] >= MAX_STREAMS_PER_PEER:
                raise Refusal(f"{caller} has {MAX_STREAMS_PER_PEER} streams open here already",
                              flight.FlightUnavailableError)  # one may end soon: dial again
            self._streams[caller] += 1
            self._connections[context.peer()] += 1
        try:
            link = host.admit(session, caller)
            writer.write_metadata(pa.py_buffer(ACK))
            link.attach(writer)
            stream = object()  # this call, while it lasts
            with self._lock:
                self._open[id(stream)] = (context.peer(), link)
            try:
                pump(reader, link)  # until the peer has sent everything, or the stream breaks
            finally:
                link.detach(done_writing=False)  # `writer` dies with this call
                with self._lock:
                    del self._open[id(stream)]
        finally:
            with self._lock:
                self._streams[caller] -= 1
                self._connections[context.peer()] -= 1

    @_answering
    def do_action(self, context: flight.ServerCallContext, action: flight.Action) -> list[bytes]:
        """Start this party's part of a run when the caller asks (`start-run`); its answer."""
        caller, host = self.caller(context), self.host
        if action.type != START_RUN:
            raise Refusal(f"{host.me} knows no action {action.type!r}")
        try:
            request = json.loads(action.body.to_pybytes())
            job, run_id, federation = request["job"], request["run_id"], request["federation"]
        except (TypeError, ValueError, KeyError):
            raise Refusal(f"its {START_RUN} request is not the JSON splitrec sends") from None
        if federation != host.federation_hash:
            raise Refusal(f"{caller}'s copy of the federation file differs from {host.me}'s")
        if host.on_start is None:
            raise Refusal(f"{host.me} is not serving (`splitrec party serve`): start its part "
                          f"of the run by hand")
        return [host.on_start(caller, str(job), str(run_id)).encode()]

    # What splitrec does not offer: refused in one line, as any call from a stranger is
    do_get = _not_offered("DoGet")
    do_put = _not_offered("DoPut")
    list_flights = _not_offered("ListFlights")
    get_flight_info = _not_offered("GetFlightInfo")
    get_schema = _not_offered("GetSchema")
    list_actions = _not_offered("ListActions")


def cut_connection(address: str) -> int:
    """Shut down this process's TCP connections to `address` (gRPC's `ipv4:host:port`).

    How many were found. The socket belongs to gRPC, which sees its connection end.
    """
    host, _, port = address.removeprefix("ipv4:").removeprefix("ipv6:").rpartition(":")
    try:
        peer = (_unmapped(host.strip("[]")), int(port))
        connections = psutil.Process().net_connections(kind="tcp")
    except (ValueError, psutil.Error):
        return 0
    cut = 0
    for connection in connections:
        remote = connection.raddr
        if remote and (_unmapped(remote.ip), remote.port) == peer and connection.fd >= 0:
            with contextlib.suppress(OSError), socket.socket(fileno=os.dup(connection.fd)) as sock:
                ip, port_now = sock.getpeername()[:2]  # still that connection (fds are reused)
                if (_unmapped(ip), port_now) == peer:
                    sock.shutdown(socket.SHUT_RDWR)
                    cut += 1
    return cut


def _unmapped(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """`ip`, an IPv4 address that a dual-stack socket shows as IPv6 (`::ffff:a.b.c.d`) as IPv4."""
    parsed = ipaddress.ip_address(ip)
    mapped = getattr(parsed, "ipv4_mapped", None)
    return mapped if mapped is not None else parsed
