"""A trial federation on this machine: each party's Flight channel in a process of its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from splitrec_core.certs import PartyCredentials, make_trial_credentials
from splitrec_core.channel.contract import Limits
from splitrec_core.channel.flight.addresses import Timeouts, free_ports
from splitrec_core.channel.flight.auth import Security
from splitrec_core.channel.flight.channel import FlightChannel
from splitrec_core.channel.flight.endpoint import FlightEndpoint, Members

LOOPBACK_FEDERATION = "loopback-trial"  # what a one-host trial's parties compare on connecting


@dataclass(frozen=True)
class LoopbackSeat:
    """What opens one party's Flight channel in a process of its own on this machine (picklable).

    Each party listens at its entry in `addresses`; `dial` names peers this party reaches at
    another address than the one they listen on, as through a relay or a NAT in front of them.
    Every seat of a federation has the same `limits`.
    """

    me: str
    order: list[str]
    addresses: dict[str, str]
    credentials: PartyCredentials
    token_hashes: dict[str, str]
    session: str
    timeouts: Timeouts = Timeouts()
    dial: dict[str, str] = field(default_factory=dict)
    limits: Limits = Limits()

    def __call__(self) -> FlightChannel:
        """Start this party's endpoint and open its channel; closing the channel stops both."""
        peers = {p: self.dial.get(p, a) for p, a in self.addresses.items() if p != self.me}
        endpoint = FlightEndpoint(self.me, self.addresses[self.me],
                                  Security.from_files(self.credentials, party=self.me),
                                  Members(peers, self.token_hashes, LOOPBACK_FEDERATION),
                                  self.timeouts, self.limits)
        return endpoint.sole_channel(self.session, self.order)


def loopback_seats(order: list[str], folder: Path, session: str, timeouts: Timeouts = Timeouts(),
                   limits: Limits = Limits()) -> dict[str, LoopbackSeat]:
    """A trial federation on 127.0.0.1: fresh credentials in `folder`, a free port per party."""
    credentials = make_trial_credentials({p: ["127.0.0.1", "localhost"] for p in order}, folder)
    ports = free_ports(len(order))
    addresses = {p: f"127.0.0.1:{port}" for p, port in zip(order, ports, strict=True)}
    hashes = {p: c.token_sha256() for p, c in credentials.items()}
    return {p: LoopbackSeat(p, order, addresses, credentials[p], hashes, session, timeouts,
                            limits=limits)
            for p in order}
