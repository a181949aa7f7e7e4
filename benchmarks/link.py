"""A link emulator: a relay that gives connections on 127.0.0.1 a long link's delay and bandwidth.

This kernel has no netem, so a relay in a process of its own stands in for the network between
two data centres. It listens on 127.0.0.1 (once the upstream does) and forwards every connection
it accepts to one upstream `host:port`; in each direction it paces every chunk at the link's
bandwidth and holds it for the one-way delay, so the bytes arrive in order, none lost, and never
sooner than a link of that profile could carry them. TLS passes through untouched: to the relay
it is bytes. Each connection is a link of its own (each party reaches the label party from its
own data centre). The TCP handshake itself is not delayed; everything sent over the connection
is. On command it cuts every open connection, resetting both ends, as a link that drops does;
later connections pass again.

For benchmarks and tests only: nothing in the product path starts it. By hand:

    python benchmarks/link.py --upstream 127.0.0.1:50051 --profile wan

prints `address 127.0.0.1:PORT`, then takes commands on its input: `cut` (it answers `cut N`,
the connections it cut) and `stop` (or the end of its input; it answers with its CPU seconds and
the bytes it carried each way). `Relay` starts one and speaks this for you.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import socket
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CHUNK = 64 * 1024         # the most the relay reads at once
IN_FLIGHT_CHUNKS = 256    # per direction: past this the relay stops reading (back-pressure)
PROBE_S = 0.05            # between tries of whether the upstream listens yet


@dataclass(frozen=True)
class Profile:
    """A link between two parties: its one-way delay and its bandwidth (None: no cap)."""

    one_way_s: float
    bits_per_s: float | None

    @property
    def bytes_per_s(self) -> float | None:
        """The bandwidth in bytes per second (None: no cap)."""
        return None if self.bits_per_s is None else self.bits_per_s / 8


# The profiles. "loopback" is no relay at all: the parties dial each other directly.
PROFILES = {
    "lan": Profile(one_way_s=0.0005, bits_per_s=1e9),
    "metro": Profile(one_way_s=0.005, bits_per_s=300e6),
    "wan": Profile(one_way_s=0.025, bits_per_s=100e6),
}
LOOPBACK = "loopback"


class Pacer:
    """When a chunk has crossed a link of `bytes_per_s`: a token bucket with no burst allowance.

    The link sends one byte after another at its bandwidth, so a chunk has left when its last
    byte has: its size over the bandwidth after the link is free and the chunk is there.
    """

    def __init__(self, bytes_per_s: float | None) -> None:
        self.bytes_per_s = bytes_per_s
        self._free_at = 0.0

    def sent_at(self, size: int, now: float) -> float:
        """When a chunk of `size` bytes that is there `now` has left."""
        if self.bytes_per_s is None:
            return now
        self._free_at = max(now, self._free_at) + size / self.bytes_per_s
        return self._free_at


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close a connection abruptly: the peer sees it reset, not ended."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Connection:
    """One relayed connection: the two directions between a party and the upstream."""

    def __init__(self, profile: Profile, near: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 far: tuple[asyncio.StreamReader, asyncio.StreamWriter], carried: list[int],
                 ) -> None:
        self.profile, self.near, self.far = profile, near, far
        self.carried = carried  # the relay's bytes towards the upstream and back, counted here
        self._ways: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        """Carry both directions until both have ended; an error on either side resets both."""
        self._ways = [asyncio.create_task(self._carry(self.near[0], self.far[1], 0)),
                      asyncio.create_task(self._carry(self.far[0], self.near[1], 1))]
        for way in self._ways:
            way.add_done_callback(self._cut_on_error)
        await asyncio.wait(self._ways)
        for _, writer in (self.near, self.far):
            writer.close()

    def _cut_on_error(self, way: asyncio.Task[None]) -> None:
        if not way.cancelled() and way.exception() is not None:
            self.cut()

    async def _carry(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                     way: int) -> None:
        """Move what `source` sends to `sink` as the link would: paced, then delayed, in order."""
        loop = asyncio.get_running_loop()
        pacer = Pacer(self.profile.bytes_per_s)
        in_flight: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(IN_FLIGHT_CHUNKS)

        async def deliver() -> None:
            while True:
                due, chunk = await in_flight.get()
                while (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                if not chunk:  # the end of the stream travels the link too
                    if sink.can_write_eof():
                        sink.write_eof()
                    return
                sink.write(chunk)
                self.carried[way] += len(chunk)
                await sink.drain()

        delivering = asyncio.create_task(deliver())
        try:
            while True:
                chunk = await source.read(CHUNK)
                due = pacer.sent_at(len(chunk), loop.time()) + self.profile.one_way_s
                await in_flight.put((due, chunk))
                if not chunk:
                    break
            await delivering
        finally:
            delivering.cancel()

    def cut(self) -> None:
        """Reset both ends at once and stop carrying."""
        for _, writer in (self.near, self.far):
            _reset(writer)
        for way in self._ways:
            way.cancel()


class _Relay:
    """The relay's connections to one upstream, and the command that cuts them."""

    def __init__(self, upstream: str, profile: Profile) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream, self.profile = (host, int(port)), profile
        self.open: set[_Connection] = set()
        self.carried = [0, 0]
        self.server: asyncio.Server | None = None

    async def listen_once_upstream_listens(self, sock: socket.socket) -> None:
        """Start accepting on `sock` (bound) once the upstream accepts a connection.

        Until then a party that dials the relay is refused, as by the upstream's host itself,
        and retries. A relay that accepted at once and then found no upstream would reset the
        connection mid-handshake, which a party takes for a TLS failure and does not retry.
        """
        while True:
            try:
                _, probe = await asyncio.open_connection(*self.upstream)
                break
            except OSError:
                await asyncio.sleep(PROBE_S)
        probe.close()
        self.server = await asyncio.start_server(self.accept, sock=sock)

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Relay one connection to the upstream (reset at once if the upstream is not there)."""
        try:
            far = await asyncio.open_connection(*self.upstream)
        except OSError:
            _reset(writer)
            return
        connection = _Connection(self.profile, (reader, writer), far, self.carried)
        self.open.add(connection)
        try:
            await connection.run()
        finally:
            self.open.discard(connection)

    def cut(self) -> int:
        """Reset every open connection; how many there were."""
        cut = list(self.open)
        for connection in cut:
            connection.cut()
        return len(cut)


async def serve(listen: str, upstream: str, profile: Profile) -> None:
    """Relay connections to `upstream` on `listen`, taking commands on standard input."""
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    relay = _Relay(upstream, profile)
    host, _, port = listen.rpartition(":")
    sock = socket.socket()
    sock.bind((host, int(port)))
    listening = asyncio.create_task(relay.listen_once_upstream_listens(sock))
    print(f"address {host}:{sock.getsockname()[1]}", flush=True)
    while (line := (await commands.readline()).decode().strip()) not in ("stop", ""):
        if line == "cut":
            print(f"cut {relay.cut()}", flush=True)
        else:
            print(f"unknown command {line!r}", flush=True)
    listening.cancel()
    if relay.server is not None:
        relay.server.close()
    relay.cut()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"stopped {usage.ru_utime + usage.ru_stime:.3f} {relay.carried[0]} "
          f"{relay.carried[1]}", flush=True)


@dataclass(frozen=True)
class RelayUsage:
    """What a relay process cost and carried over its life."""

    cpu_s: float
    bytes_up: int    # towards the upstream
    bytes_down: int  # back from it


class Relay:
    """A relay process in front of `upstream` (`host:port`): start it, cut its links, stop it.

    The process dies with its input, so it cannot outlive the one that started it.
    """

    def __init__(self, upstream: str, profile: Profile, listen: str = "127.0.0.1:0") -> None:
        self.upstream, self.profile, self.listen = upstream, profile, listen
        self._process: subprocess.Popen[str] | None = None
        self.address = ""  # host:port to dial instead of the upstream, once started

    def start(self) -> Relay:
        """Start the relay process; its address is known at once (it listens once upstream does)."""
        rate = self.profile.bits_per_s or 0
        self._process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--upstream", self.upstream,
             "--listen", self.listen, "--one-way-ms", repr(1000 * self.profile.one_way_s),
             "--mbit-per-s", repr(rate / 1e6)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.address = self._answer("address").split()[1]
        return self

    def _answer(self, word: str) -> str:
        """The relay's next line, which must start with `word`."""
        assert self._process is not None and self._process.stdout is not None
        line = self._process.stdout.readline().strip()
        if not line.startswith(word):
            raise RuntimeError(f"the relay to {self.upstream} answered {line!r}, not {word!r} "
                               f"(exit status {self._process.poll()})")
        return line

    def _command(self, command: str, answer: str) -> str:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        return self._answer(answer)

    def cut(self) -> int:
        """Reset every connection open through the relay now; how many there were."""
        return int(self._command("cut", "cut").split()[1])

    def stop(self) -> RelayUsage:
        """Cut what is still open and end the process; what it cost and carried."""
        assert self._process is not None
        _, cpu_s, up, down = self._command("stop", "stopped").split()
        self._process.wait()
        return RelayUsage(float(cpu_s), int(up), int(down))

    def __enter__(self) -> Relay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self.stop()


def main() -> None:
    """Run a relay as the command line asks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="host:port to forward to")
    parser.add_argument("--listen", default="127.0.0.1:0", help="host:port (port 0: any free)")
    parser.add_argument("--profile", choices=PROFILES, help="a named link (else the two below)")
    parser.add_argument("--one-way-ms", type=float, default=0.0)
    parser.add_argument("--mbit-per-s", type=float, default=0.0, help="0: no cap")
    args = parser.parse_args()
    profile = PROFILES[args.profile] if args.profile else Profile(
        args.one_way_ms / 1000, args.mbit_per_s * 1e6 or None)
    asyncio.run(serve(args.listen, args.upstream, profile))


if __name__ == "__main__":
    main()
