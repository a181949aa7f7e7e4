"""Where the two ends of each RR22 pair listen: the label party's and the feature party's.

spu runs two parties at a time, so the label party runs one pair with each feature party, each
end a worker process listening on a port of its own (`rr22_pair`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from splitrec_core.certs import PartyCredentials
from splitrec_core.channel.flight.addresses import free_ports


@dataclass(frozen=True)
class PairLink:
    """Where the two ends of one label–feature pair listen, as host:port."""

    label: str
    feature: str


@dataclass(frozen=True)
class Rr22Link:
    """One party's view of the RR22 links: its pairs, how long to wait, its TLS files.

    `pairs` maps each feature party to its pair's addresses. Without `credentials` the link is
    plaintext (parties in one process, or a federation marked insecure). `listen_host`, if set,
    is where this party's end listens instead of its address's host (where its Flight endpoint
    listens: `PartyView.listen`).
    """

    pairs: Mapping[str, PairLink]
    timeout_s: float
    credentials: PartyCredentials | None = None
    listen_host: str | None = None


def federation_pairs(label: str, followers: list[str], hosts: Mapping[str, str],
                     base_port: int) -> dict[str, PairLink]:
    """Pair i (feature parties in federation order) listens on ports `base_port` + 2i and + 2i + 1.

    The first at the label party's host, the second at the feature party's.
    """
    return {f: PairLink(f"{hosts[label]}:{base_port + 2 * i}",
                        f"{hosts[f]}:{base_port + 2 * i + 1}")
            for i, f in enumerate(followers)}


def loopback_pairs(followers: list[str]) -> dict[str, PairLink]:
    """Pairs on 127.0.0.1 at ports free now, for parties that run in one process.

    The ports are outside those the OS gives outgoing connections (`free_port_block`): spu
    dials its peer's port until it listens, and on loopback could otherwise connect to itself.
    """
    ports = iter(free_ports(2 * len(followers)))
    return {f: PairLink(f"127.0.0.1:{next(ports)}", f"127.0.0.1:{next(ports)}")
            for f in followers}
