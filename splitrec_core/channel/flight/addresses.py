"""Where a party's Flight endpoint listens and how long a party waits for its peers.

Nothing here needs `pyarrow.flight`: reading a federation file uses it without loading Flight.
"""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass
from pathlib import Path


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


def outgoing_ports() -> range:
    """The ports the OS gives outgoing connections (Linux: `ip_local_port_range`).

    Elsewhere Linux's default, below the BSDs' and Windows' (49152 up).
    """
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


#: the lowest port chosen for a party to listen on (below: the well-known services)
LOWEST_CHOSEN_PORT = 20000
# Ports are drawn from the OS's randomness, not `random`'s global state: training seeds that
# (keras.utils.set_random_seed), and two processes that trained with the same seed would then
# choose the same ports
_UNSEEDED = random.SystemRandom()


def free_port_block(count: int, host: str = "127.0.0.1") -> int:
    """A port p with p .. p + count - 1 free now, for parties that will listen on them.

    Chosen below the ports the OS gives outgoing connections: a party that dials a port in
    that range on its own host before the listener is up can be given that very port as its
    source, and connect to itself (TCP's simultaneous open; on loopback about once in ten
    thousand attempts, which a retrying dialer reaches). Checked, not reserved: a race with
    another program is possible but rare.
    """
    highest = min(outgoing_ports().start, 65536) - count
    for _ in range(100):
        base = _UNSEEDED.randint(LOWEST_CHOSEN_PORT, highest)
        sockets = [socket.socket() for _ in range(count)]
        try:
            for offset, sock in enumerate(sockets):
                sock.bind((host, base + offset))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports on {host} between "
                       f"{LOWEST_CHOSEN_PORT} and {highest + count - 1}")


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` different ports nobody listens on now, chosen as `free_port_block` chooses them."""
    ports: list[int] = []
    while len(ports) < count:
        if (port := free_port_block(1, host)) not in ports:
            ports.append(port)
    return ports
