"""A party's Flight endpoint, kept up for the process's life, and the sessions of a run on it."""

from __future__ import annotations

import atexit

from splitrec_core.channel import Channel, ChannelStats, Limits
from splitrec_core.channel.flight.channel import FlightChannel, dialers
from splitrec_core.channel.flight.endpoint import FlightEndpoint, Members
from splitrec_core.federation import PartyView
from splitrec_core.names import plain_name

_ENDPOINTS: dict[tuple[str, str], FlightEndpoint] = {}


def endpoint(view: PartyView) -> FlightEndpoint:
    """This party's Flight endpoint, started on first use and kept up for the process's life."""
    key = (view.federation.hash(), view.me)
    if key not in _ENDPOINTS:
        members = Members(view.peers, view.token_hashes, view.federation.hash())
        _ENDPOINTS[key] = FlightEndpoint(view.me, view.listen, view.security(), members,
                                         view.timeouts(),
                                         Limits.in_mb(**view.federation.channel.model_dump()))
        atexit.register(_ENDPOINTS[key].close)
    return _ENDPOINTS[key]


def session(view: PartyView, run_id: str, stage: str) -> FlightChannel:
    """Open `stage` of run `run_id`: with the label party, or at it with every feature party.

    Nothing passes between feature parties, so they never connect.
    """
    ours = endpoint(view)
    expect_run(ours, view, run_id)  # a peer may reach a stage before us
    return ours.channel(f"{run_id}/{stage}", view.federation.order,
                        hub=view.federation.label_party)


def expect_run(ours: FlightEndpoint, view: PartyView, run_id: str) -> None:
    """Let the parties that dial us open streams in any stage of run `run_id` from now on."""
    federation = view.federation
    ours.expect(plain_name(run_id, "run ID"),
                dialers(view.me, federation.order, federation.label_party))


def party_traffic(channel: Channel) -> dict[str, dict[str, int]]:
    """What crossed this party's channel, sent and received.

    At the label party, through which every message of a run passes, the whole run's traffic.
    """
    return ChannelStats.merge(channel.sent().as_dict(), channel.received().as_dict())
