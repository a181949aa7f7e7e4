"""Where a party's Flight endpoint listens and how long a party waits for its peers.

Nothing here needs `pyarrow.flight`: reading a federation file uses it without loading Flight.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass


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


def free_port_block(count: int, host: str = "127.0.0.1") -> int:
    """A port p with p .. p + count - 1 free now, for a trial federation's parties.

    `splitrec party trial --base-port` gives its parties consecutive ports. Checked, not
    reserved: a race with another program is possible but rare.
    """
    for _ in range(50):
        base = free_ports(1, host)[0]
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
    raise RuntimeError(f"no {count} consecutive free ports on {host}")
