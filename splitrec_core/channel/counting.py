"""What every transport's channel keeps alike: its party, its limits, its traffic both ways."""

from __future__ import annotations

from splitrec_core.channel.contract import ChannelStats, Kind, Limits


class CountingChannel:
    """What every transport's channel keeps alike: party `me`, its limits, its traffic both ways.

    A transport adds each message it sends to `_sent` (refusing one over the maximum size) and
    each it hands out to `_received`.
    """

    def __init__(self, me: str, limits: Limits = Limits()) -> None:
        self.me, self.limits = me, limits
        self._sent, self._received = ChannelStats(), ChannelStats()

    def _count_outgoing(self, kind: Kind, to: str, nbytes: int) -> None:
        """Count a message about to go `to`, once it is known to be small enough."""
        self.limits.check_outgoing(kind, to, nbytes)
        self._sent.add(kind, nbytes)

    def sent(self) -> ChannelStats:
        """What this party sent."""
        return self._sent

    def count_beside(self, kind: Kind, sent: int, received: int) -> None:
        """Count traffic with a peer that crossed beside the channel (RR22 over spu's link).

        One message each way: the bytes are what this party's sockets sent and received.
        """
        if sent:
            self._sent.add(kind, sent)
        if received:
            self._received.add(kind, received)

    def received(self) -> ChannelStats:
        """What this party received."""
        return self._received
