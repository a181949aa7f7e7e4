"""A party's Flight endpoint: its server, the sessions it takes part in, and reaching a peer.

Its server (`server`) accepts the streams later parties open in the sessions this party expects
them in, and the one action, `start-run`, with which the label party asks a serving party to
join a run. Dialing a peer retries with backoff while the peer is not up yet; every failure
names the peer and what failed.
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
from splitrec_core.channel.flight.auth import Security
from splitrec_core.channel.flight.channel import FlightChannel
from splitrec_core.channel.flight.server import START_RUN, Refusal, Server
from splitrec_core.channel.flight.stream import Link, first_line
from splitrec_core.errors import InputError

T = TypeVar("T")
MAX_PENDING_PER_PEER = 2  # sessions a peer may open here before this party opens them


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
        # Who may open streams in a session (or, by its name and a "/", in the sessions of a run)
        self._callers: dict[str, frozenset[str]] = {}
        self._lock = threading.Lock()
        # a list: keep every message sent
        self.recorded: list[tuple[Kind, str, bytes]] | None = None
        # serving: on_start(caller, job, run_id) starts this party's part of a run of `job`
        # (train, score, models), says how it went
        self.on_start: Callable[[str, str, str], str] | None = None
        known = {p: h for p, h in token_hashes.items() if p != me}
        try:
            self._server = Server(self, security.location(listen).uri.decode(), security, known)
        except pa.ArrowException:  # gRPC says no more than "Server did not start properly"
            raise InputError(f"{me}'s listen address {listen}", None,
                             "cannot listen there: another process holds the port (`ss -ltnp` "
                             "shows which), or the host is not this machine's. Free it, or "
                             "give the party another port in every copy of federation.toml "
                             "(and in its party.toml's listen)") from None
        self.port = self._server.port
        self._closing = threading.Event()
        threading.Thread(target=self._cut_idle_streams, daemon=True,
                         name=f"flight-{me}-idle-streams").start()

    def _cut_idle_streams(self) -> None:
        """Until closing, cut the streams quiet for longer than a message may take and a dial."""
        idle_s = self.timeouts.recv_s + self.timeouts.connect_s
        while not self._closing.wait(min(idle_s / 4, 30.0)):
            self._server.cut_idle_streams(idle_s)

    def expect(self, scope: str, callers: Iterable[str]) -> None:
        """Let `callers` open streams in session `scope`, and in every session `scope/…`.

        A stream in any other session is refused: a peer cannot make this party hold messages
        for sessions it never opens.
        """
        with self._lock:
            self._callers[scope] = self._callers.get(scope, frozenset()) | frozenset(callers)

    def link(self, session: str, peer: str) -> Link:
        """The link to `peer` in `session`, made on first use by either side; ours from now on."""
        with self._lock:
            if (session, peer) not in self._links:
                self._links[(session, peer)] = self._new_link(peer)
            link = self._links[(session, peer)]
            link.claimed = True
            return link

    def _new_link(self, peer: str) -> Link:
        """A link to `peer` with this endpoint's limits; what waits may go untaken `recv_s`."""
        return Link(peer, self.limits, self.timeouts.recv_s)

    def admit(self, session: str, caller: str) -> Link:
        """The link for a stream `caller` opens to us in `session`, or a `server.Refusal`.

        The caller must be one this party expects in `session`. The link is the one our channel
        waits on, or a fresh one if the peer had connected before (it restarted, e.g. after its
        process was killed, and the old stream is over). A peer ahead of us may open
        `MAX_PENDING_PER_PEER` sessions before we do; beyond, it is told to dial again later.
        """
        with self._lock:
            scopes = [s for s in self._callers if session == s or session.startswith(s + "/")]
            if not scopes:
                raise Refusal(f"{self.me} has no session {session!r} open",
                              flight.FlightUnavailableError)
            if not any(caller in self._callers[s] for s in scopes):
                raise Refusal(f"{caller} is not a member of session {session!r} at {self.me}",
                              flight.FlightUnauthorizedError)
            old = self._links.get((session, caller))
            if old is not None and not old.connected.is_set():
                return old
            ahead = sum(1 for (_, peer), link in self._links.items()
                        if peer == caller and not link.claimed)
            if old is None and ahead >= MAX_PENDING_PER_PEER:
                raise Refusal(f"{caller} opened {ahead} sessions {self.me} has not opened yet",
                              flight.FlightUnavailableError)
            if old is not None:
                old.fail("connected again (did it restart?)")
            fresh = self._links[(session, caller)] = self._new_link(caller)
            fresh.claimed = old is not None and old.claimed
            return fresh

    def fail_waiting(self, session: str, caller: str, why: str) -> None:
        """Tell our side of `session`, if it waits for `caller`, why `caller` cannot join."""
        with self._lock:
            link = self._links.get((session, caller))
        if link is not None:
            link.fail(why)

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
        deadline, pause = time.monotonic() + timeouts.connect_s, timeouts.backoff_s
        while True:
            options = flight.FlightCallOptions(headers=security.call_headers(self.me, peer))
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
        """Stop serving: let streams still open end for `wait_s`, then cut their connections.

        A hung peer cannot hold this process up: every link is failed first (a handler waiting
        for room in an inbox lets go), and a stream still open after `wait_s` loses its
        connection, so its handler's read ends too.
        """
        self._closing.set()
        with self._lock:
            links = list(self._links.values())
        for link in links:
            link.fail(f"{self.me} stopped serving")
        stopping = threading.Thread(target=self._server.shutdown, daemon=True)
        stopping.start()
        stopping.join(wait_s)
        if stopping.is_alive():
            self._server.cut_open_streams()
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
