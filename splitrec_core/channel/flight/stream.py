"""One stream between two parties in one session: our side of it, and what moves along it.

Of every pair of parties that talk, the earlier one's endpoint accepts the stream the later one
opens (`endpoint`; with parties apart, the label party's accepts every feature party's); the
party that dials reads its stream on a thread of its own. Either way a `Link` holds our side
of the stream and `pump` moves what arrives into the link's inbox, which holds what waits to be
taken up to a bound (`channel.inbox`: while it is full, the pump stops reading and the peer's
writes wait).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
from pyarrow import flight

from splitrec_core.channel.contract import PeerError, ProtocolError, RunStopped
from splitrec_core.channel.inbox import Incoming

ACK = b"accepted"  # the first message on a stream: the peer let us in
BYE = b"bye"       # the last: the party is done with the session (`bye`, `bye\n<why it stopped>`)


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
    claimed: bool = False  # our channel has taken it (a peer ahead of us may open it first)
    said_goodbye: bool = False  # the peer ended its stream as agreed (what it sent stays to take)
    last_heard: float = field(default_factory=time.monotonic)  # when a message last crossed it

    def attach(self, writer: flight.MetadataRecordBatchWriter) -> None:
        """Start writing to the peer through `writer`: the stream is up."""
        with self.lock:
            self.writer = writer
        self.connected.set()

    def write(self, message: bytes) -> None:
        """Send the peer one message; a stream that is over is an error naming the peer."""
        with self.lock:
            if self.writer is None:
                if isinstance(self.violation, RunStopped):
                    raise self.violation
                raise PeerError(f"{self.peer} {self.failure or 'is not connected'}")
            self.writer.write_metadata(pa.py_buffer(message))
            self.last_heard = time.monotonic()

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
            if chunk.data is not None or chunk.app_metadata is None:
                link.fail(ProtocolError(f"{link.peer} sent a Flight message without splitrec's "
                                        f"framing (record-batch data, or no metadata)"))
                if hang_up is not None:
                    hang_up()
                return
            message = memoryview(chunk.app_metadata)
            link.last_heard = time.monotonic()
            if message == BYE or message[: len(BYE) + 1] == BYE + b"\n":  # the peer is done
                link.said_goodbye = message == BYE
                link.fail(farewell(link.peer, message))
                link.detach(done_writing=hang_up is not None)  # (a stream we dialed)
            elif not link.deliver(message):
                if hang_up is not None:
                    hang_up()
                return
    except StopIteration:
        link.said_goodbye = link.failure is None or link.said_goodbye
        link.fail("ended the session")
    except (flight.FlightError, pa.ArrowException, OSError) as error:
        link.fail(f"broke the stream: {first_line(error)}")


def goodbye(why: str | None) -> bytes:
    """The last message of a session: BYE, with why our part of the run stopped if it did."""
    return BYE if why is None else BYE + b"\n" + why.encode()


def farewell(peer: str, message: memoryview) -> str | ProtocolError:
    """What a peer's last message says: it ended the session, or it stopped the run and why.

    The reason is the peer's text: one line of printable characters, at most 500, is kept.
    """
    text = bytes(message[len(BYE) + 1 : len(BYE) + 1 + 500]).decode(errors="replace")
    why = "".join(c for c in text.split("\n", 1)[0] if c.isprintable())
    return RunStopped(f"{peer} stopped the run: {why}") if why else "ended the session"


def hang_up(writer: flight.FlightStreamWriter) -> None:
    """End our side of a stream a peer refused; a peer already gone has nothing to flush."""
    try:
        writer.done_writing()
        writer.close()
    except (flight.FlightError, pa.ArrowException, OSError):
        pass


def read_with_deadline(reader: flight.FlightStreamReader, deadline: float) -> memoryview | None:
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
