"""One session over Flight: the channel a party talks to its peers through.

It holds a `stream.Link` per peer, dialing the earlier parties and waiting for the later ones to
dial us, through the endpoint that serves this party (`endpoint`), which it knows only as a
`SessionEndpoint`.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

import pyarrow as pa
from pyarrow import flight

from splitrec_core.channel.contract import Kind, Limits, PeerError, stop_reason
from splitrec_core.channel.counting import CountingChannel
from splitrec_core.channel.flight.addresses import Timeouts
from splitrec_core.channel.flight.stream import (
    ACK,
    Link,
    first_line,
    goodbye,
    hang_up,
    pump,
    read_with_deadline,
)
from splitrec_core.channel.framing import frame, payload_size, received_table

T = TypeVar("T")


class SessionEndpoint(Protocol):
    """What a session needs of the endpoint serving its party (`endpoint.FlightEndpoint`)."""

    me: str
    limits: Limits
    timeouts: Timeouts
    federation_hash: str
    recorded: list[tuple[Kind, str, bytes]] | None

    def where(self, peer: str) -> str:
        """`peer` and its address, for messages."""

    def expect(self, scope: str, callers: Iterable[str]) -> None:
        """Let `callers` open streams in session `scope`."""

    def link(self, session: str, peer: str) -> Link:
        """The link to `peer` in `session`."""

    def forget(self, session: str, links: Iterable[Link]) -> None:
        """Drop `links` of `session`."""

    def reach(self, peer: str,
              call: Callable[[flight.FlightClient, flight.FlightCallOptions, float], T],
              ) -> tuple[flight.FlightClient, T]:
        """Connect to `peer` and make `call(client, options, deadline)`."""

    def close(self) -> None:
        """Stop serving."""


GOODBYE_S = 2.0  # how long our goodbye may wait for room in the stream (a peer that reads nothing)


def say_goodbye(link: Link, why: str | None, wait_s: float) -> None:
    """Write our goodbye (with `why`) to `link`'s peer, waiting for room at most `wait_s`.

    A peer that stopped reading while blocked sending to us leaves no room in the stream; then
    the goodbye is given up on (and the write ends when the link fails and the stream ends).
    """

    def write() -> None:
        with contextlib.suppress(PeerError, flight.FlightError, pa.ArrowException, OSError):
            link.write(goodbye(why))

    writing = threading.Thread(target=write, daemon=True, name=f"goodbye-to-{link.peer}")
    writing.start()
    writing.join(wait_s)


def dialers(me: str, order: list[str], hub: str | None = None) -> list[str]:
    """The parties that open their streams to `me`.

    Those later in `order`; with a `hub`, of those only the hub, or every one at the hub.
    """
    mine = order.index(me)
    return [p for p in order[mine + 1 :] if hub in (None, p, me)]


class FlightChannel(CountingChannel):
    """Party `me`'s view of one session over Flight; counts what it sends and receives."""

    def __init__(self, endpoint: SessionEndpoint, session: str, order: list[str],
                 hub: str | None = None) -> None:
        super().__init__(endpoint.me, endpoint.limits)
        self._endpoint, self._session = endpoint, session
        self._links: dict[str, Link] = {}
        self._dialed: dict[str, tuple[flight.FlightClient, threading.Thread]] = {}
        self.then_close: SessionEndpoint | None = None  # an endpoint to stop with the channel
        mine = order.index(self.me)
        peers = [p for p in order if p != self.me and hub in (None, p, self.me)]
        endpoint.expect(session, dialers(self.me, order, hub))
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

    def _dial(self, peer: str) -> Link:
        """Open our stream to `peer` and start moving what arrives on it into the link's inbox.

        Retries with backoff while the peer is not up yet.
        """
        endpoint = self._endpoint
        hello = json.dumps({"session": self._session, "federation": endpoint.federation_hash})

        def open_stream(client: flight.FlightClient, options: flight.FlightCallOptions,
                        deadline: float) -> tuple:
            writer, reader = client.do_exchange(flight.FlightDescriptor.for_command(hello), options)
            try:
                first = read_with_deadline(reader, deadline)
            except BaseException:
                hang_up(writer)
                raise
            if first is None or bytes(first) != ACK:
                hang_up(writer)
                raise PeerError(f"{endpoint.where(peer)} did not accept our stream")
            return writer, reader

        client, (writer, reader) = endpoint.reach(peer, open_stream)
        link = endpoint.link(self._session, peer)
        link.attach(writer)
        reading = threading.Thread(target=pump, args=(reader, link, reader.cancel), daemon=True,
                                   name=f"flight-{self.me}-from-{peer}")
        reading.start()
        self._dialed[peer] = (client, reading)
        return link

    def _await(self, peer: str) -> Link:
        """Wait for `peer` to open its stream to us."""
        link = self._links[peer] = self._endpoint.link(self._session, peer)
        if not link.connected.wait(self._endpoint.timeouts.connect_s):
            raise PeerError(f"{self._endpoint.where(peer)} did not connect to {self.me} within "
                            f"{self._endpoint.timeouts.connect_s:.0f} s: is it running?")
        if link.failure and not link.said_goodbye:  # (a peer done already left what it sent)
            raise PeerError(f"{peer}: {link.failure}")
        return link

    def send(self, kind: Kind, to: str, table: pa.Table) -> None:
        """Send `table` to party `to` (waiting while its inbox for us is full)."""
        link = self._links[to]
        message = frame(kind, table)
        self._count_outgoing(kind, to, payload_size(message))
        if self._endpoint.recorded is not None:
            self._endpoint.recorded.append((kind, to, message))
        try:
            link.write(message)
        except (flight.FlightError, pa.ArrowException, OSError) as error:
            raise PeerError(f"sending '{kind.value}' to {self._endpoint.where(to)} failed: "
                            f"{first_line(error)}") from None

    def recv(self, kind: Kind, frm: str) -> pa.Table:
        """Receive the next message from `frm`, which must be of `kind`."""
        payload = self._links[frm].take(self.me, kind, self._endpoint.timeouts.recv_s,
                                        self._endpoint.where(frm))
        self._received.add(kind, payload.nbytes)
        return received_table(frm, kind, payload)

    def ready(self, frm: str) -> bool:
        """Whether a message from `frm` waits (or its stream ended)."""
        return self._links[frm].inbox.ready()

    def inbox_peaks(self) -> dict[str, int]:
        """Per peer, the most bytes that ever waited in its inbox (at most the bound)."""
        return {peer: link.inbox.peak for peer, link in self._links.items()}

    def close(self, why: str | None = None) -> None:
        """End the session; `why` our part of the run stopped, if it stopped for good.

        Say goodbye (with `why`) to every peer: the parties that dialed us, and through the
        streams we opened before ending our half of them, waiting (up to `connect_s`) until the
        peer has read everything we sent. Nothing more is taken from any inbox, so a peer
        blocked sending into a full one is refused now, not after the inbox's patience.
        """
        for peer, link in self._links.items():
            say_goodbye(link, why, GOODBYE_S)
            link.fail(f"was still sending when {self.me} closed the session")
            if peer not in self._dialed:
                link.detach(done_writing=False)
        for peer, (client, reading) in self._dialed.items():
            self._links[peer].detach(done_writing=True)
            reading.join(self._endpoint.timeouts.connect_s)
            client.close()
        self._endpoint.forget(self._session, self._links.values())
        if self.then_close is not None:
            self.then_close.close()

    def __enter__(self) -> FlightChannel:
        return self

    def __exit__(self, kind: object, error: BaseException | None, trace: object) -> None:
        """End the session; if an error a retry cannot mend ends it, tell the peers why."""
        self.close(stop_reason(error))
