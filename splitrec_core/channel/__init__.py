"""The one door between parties: every byte that crosses goes through a `Channel` and is counted."""

from splitrec_core.channel.contract import (
           Channel,
           ChannelStats,
           Kind,
           Limits,
           PeerError,
           ProtocolError,
)
from splitrec_core.channel.framing import array_table, table_array
from splitrec_core.channel.local import LocalChannel, LocalHub

__all__ = ["Channel", "ChannelStats", "Kind", "Limits", "LocalChannel", "LocalHub", "PeerError",
           "ProtocolError", "array_table", "table_array"]
