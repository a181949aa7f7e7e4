"""One session over Flight: a stream per peer, the bounded inbox it fills, and the channel.

Of every pair of parties that talk, the earlier one's endpoint accepts the stream the later one
opens (`endpoint`; with parties apart, the label party's accepts every feature party's); the
party that dials reads its stream on a thread of its own. Either way a `Link` holds our side
of the stream and `pump` moves what arrives into the link's inbox, which holds what waits to be
taken up to a bound (`channel.inbox`: while it is full, the pump stops reading and the peer's
writes wait).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
from pyarrow import flight

from splitrec_core.channel.base import (
    CountingChannel,
    Kind,
    PeerError,
    ProtocolError,
    frame,
    payload_size,
    received_table,
)
from splitrec_core.channel.inbox import Incoming

if TYPE_CHECKING:
    from splitrec_core.channel.flight.endpoint import FlightEndpoint

ACK = b"accepted"  # the first message on a stream: the peer let us in
BYE = b"bye"       # the last, from the party that was dialed: it is done with the session


@dataclass
class Link(Incoming):
    """Our side of the stream with one peer in one session: its inbox and the way out to it.

    The stream's writer is used by the party's thread (to send) and by the thread reading the
    stream (to end it when the peer says goodbye), so every use is under `lock`, and once the
    stream is over the writer is dropped: a late send is a clear error, not a write to a closed
    call.
    """

    connected: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # The stream's writer while it is up (on a stream we dialed, a `FlightStreamWriter`)
    writer: flight.MetadataRecordBatchWriter | None = None

    def attach(self, writer: flight.MetadataRecordBatchWriter) -> None:
        """Start writing to the peer through `writer`: the stream is up."""
        with self.lock:
            self.writer = writer
        self.connected.set()

    def write(self, message: bytes) -> None:
        """Send the peer one message; a stream that is over is an error naming the peer."""
        with self.lock:
            if self.writer is None:
                raise PeerError(f"{self.peer} {self.failure or 'is not connected'}")
            self.writer.write_metadata(pa.py_buffer(message))

    def detach(self, done_writing: bool) -> None:
        """Stop writing (telling the peer so, if `done_writing`: our half of the stream ends)."""
        with self.lock:
            writer, self.writer = self.writer, None
            if done_writing and writer is not None:
                try:
                    writer.done_writing()
                except (flight.FlightError, pa.ArrowException, OSError):
                    pass  # the peer is gone already; there is nothing left to tell it

    def fail(self, why: str | ProtocolError) -> None:
        """Mark the stream over (see `Incoming.fail`), waking a party waiting for it to connect."""
        super().fail(why)
        self.connected.set()


def pump(reader: flight.MetadataRecordBatchReader, link: Link,
         hang_up: Callable[[], None] | None = None) -> None:
    """Move every message arriving from `link.peer` into its inbox until the stream ends.

    If the link must end first, stop reading and `hang_up` (on a stream we dialed: cancel it;
    the server ends an accepted one when its handler returns), so the peer's writes fail.
    """
    try:
        while True:
            chunk = reader.read_chunk()
            if chunk.app_metadata is None:
                continue
            message = memoryview(chunk.app_metadata)
            if message == BYE:  # the peer we dialed is done: end our half too
                link.fail("ended the session")
                link.detach(done_writing=True)
            elif not link.deliver(message):
                if hang_up is not None:
                    hang_up()
                return
    except StopIteration:
        link.fail("ended the session")
    except (flight.FlightError, pa.ArrowException, OSError) as error:
        link.fail(f"broke the stream: {first_line(error)}")


class FlightChannel(CountingChannel):
    """Party `me`'s view of one session over Flight; counts what it sends and receives."""

    def __init__(self, endpoint: FlightEndpoint, session: str, order: list[str],
                 hub: str | None = None) -> None:
        super().__init__(endpoint.me, endpoint.limits)
        self._endpoint, self._session = endpoint, session
        self._links: dict[str, Link] = {}
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
        if link.failure:
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

    def inbox_peaks(self) -> dict[str, int]:
        """Per peer, the most bytes that ever waited in its inbox (at most the bound)."""
        return {peer: link.inbox.peak for peer, link in self._links.items()}

    def close(self) -> None:
        """End the session.

        Tell the parties that dialed us goodbye; end our half of the streams we opened and wait
        (up to `connect_s`) until the peer has read everything we sent. Nothing more is taken
        from any inbox, so a peer blocked sending into a full one is refused now, not after
        the inbox's patience.
        """
        for peer, link in self._links.items():
            if peer not in self._dialed:
                with contextlib.suppress(PeerError, flight.FlightError, pa.ArrowException):
                    link.write(BYE)
                link.detach(done_writing=False)
            link.fail(f"was still sending when {self.me} closed the session")
        for peer, (client, reading) in self._dialed.items():
            self._links[peer].detach(done_writing=True)
            reading.join(self._endpoint.timeouts.connect_s)
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
    """The first message on a fresh stream, cancelling the read at `deadline`.

    Flight has no per-read timeout.
    """
    watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), reader.cancel)
    watchdog.start()
    try:
        chunk = reader.read_chunk()
        return None if chunk.app_metadata is None else memoryview(chunk.app_metadata)
    except flight.FlightCancelledError:
        raise flight.FlightUnavailableError("no answer before the deadline") from None
    finally:
        watchdog.cancel()


def first_line(error: BaseException) -> str:
    """The part of a Flight error a person needs (gRPC appends its debug context)."""
    text = (str(error).strip() or type(error).__name__).splitlines()[0]
    return text.split(". Detail:")[0].split(". gRPC client debug context")[0]
