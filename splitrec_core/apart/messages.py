"""The messages of the registry's sessions, and the one that opens a scoring session, typed.

Each crosses as one message of the `registry` kind: a one-row table whose `json` column holds a
small JSON object, the message's `body`. The key that marks a message in its body is its `key`;
a party that may get one of several messages (a feature party told to move, or not) tells them
apart by it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Protocol, Self, TypeVar, overload

import pyarrow as pa

from splitrec_core.channel import Channel, Kind, PeerError, ProtocolError
from splitrec_core.channel.expect import receive_row
from splitrec_core.registry import Aliases
from splitrec_core.registry.promotion import Verdict
from splitrec_core.report.metrics import VersionMetrics


class RegistryMessage(Protocol):
    """A message of the `registry` kind: its JSON body, and the key that marks it there."""

    key: ClassVar[str]

    def body(self) -> dict[str, Any]:
        """The JSON object that crosses."""
        ...

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Self:
        """The message a received body holds."""
        ...


M = TypeVar("M", bound=RegistryMessage)
N = TypeVar("N", bound=RegistryMessage)


@dataclass(frozen=True)
class ScoreWith:
    """Before scoring, from the label party: the version every party scores with."""

    version: str
    key: ClassVar[str] = "version"

    def body(self) -> dict[str, Any]:
        """`{"version": ...}`."""
        return {"version": self.version}

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ScoreWith:
        """The version named in `body`."""
        return cls(body["version"])


@dataclass(frozen=True)
class Judged:
    """After registering, from the label party: the version's metrics and its verdict."""

    metrics: VersionMetrics
    verdict: Verdict
    key: ClassVar[str] = "verdict"

    def body(self) -> dict[str, Any]:
        """`{"metrics": ..., "verdict": ...}`."""
        return {"metrics": self.metrics.as_json(), "verdict": self.verdict.as_json()}

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Judged:
        """The metrics and verdict in `body`."""
        return cls(VersionMetrics.from_json(body["metrics"]), Verdict(**body["verdict"]))


@dataclass(frozen=True)
class Registered:
    """A feature party's acknowledgement: it registered its part as `version`."""

    version: str
    key: ClassVar[str] = "registered"

    def body(self) -> dict[str, Any]:
        """`{"registered": ...}`."""
        return {"registered": self.version}

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Registered:
        """The version `body` acknowledges."""
        return cls(body["registered"])


@dataclass(frozen=True)
class HoldsVersion:
    """Before a move, from the label party: does the feature party hold `version`?"""

    version: str
    key: ClassVar[str] = "holds"

    def body(self) -> dict[str, Any]:
        """`{"holds": version}`."""
        return {"holds": self.version}

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> HoldsVersion:
        """The version `body` asks about."""
        return cls(body["holds"])


@dataclass(frozen=True)
class Holds:
    """A feature party's answer to `HoldsVersion`."""

    holds: bool
    key: ClassVar[str] = "holds"

    def body(self) -> dict[str, Any]:
        """`{"holds": true|false}`."""
        return {"holds": self.holds}

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Holds:
        """The answer in `body`."""
        return cls(bool(body["holds"]))


@dataclass(frozen=True)
class Abort:
    """From the label party: the move is called off, and why; nothing moves anywhere."""

    why: str
    key: ClassVar[str] = "abort"

    def body(self) -> dict[str, Any]:
        """`{"abort": why}`."""
        return {"abort": self.why}

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Abort:
        """The reason in `body`."""
        return cls(body["abort"])


@dataclass(frozen=True)
class NewAliases:
    """From the label party: the aliases every party takes."""

    aliases: Aliases
    key: ClassVar[str] = "aliases"

    def body(self) -> dict[str, Any]:
        """`{"aliases": {...}}`."""
        return {"aliases": asdict(self.aliases)}

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> NewAliases:
        """The aliases in `body`."""
        return cls(Aliases(**body["aliases"]))


@dataclass(frozen=True)
class Moved:
    """A feature party's confirmation: it took the new aliases."""

    key: ClassVar[str] = "moved"

    def body(self) -> dict[str, Any]:
        """`{"moved": true}`."""
        return {"moved": True}

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Moved:
        """The confirmation (its body says nothing more)."""
        return cls()


def send(channel: Channel, peer: str, message: RegistryMessage) -> None:
    """Send `peer` one message of the registry kind."""
    channel.send(Kind.REGISTRY, peer, pa.table({"json": [json.dumps(message.body())]}))


# One expected kind or two (a party told to move, or not): the caller gets the kinds it named.
@overload
def receive(channel: Channel, peer: str, expected: type[M], /) -> M: ...


@overload
def receive(channel: Channel, peer: str, expected: type[M], other: type[N], /) -> M | N: ...


def receive(channel: Channel, peer: str, *expected: type[RegistryMessage]) -> RegistryMessage:
    """The next message of the registry kind from `peer`: the first of `expected` it matches.

    A body that matches none of them (a peer that differs from us), or that is not such a
    message at all, is an error naming the peer.
    """
    wanted = " or ".join(kind.__name__ for kind in expected)
    text = receive_row(channel, Kind.REGISTRY, peer, {"json": pa.string()})["json"]
    try:
        body = json.loads(text)
        for kind in expected:
            if kind.key in body:
                return kind.from_body(body)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ProtocolError(f"{peer} sent '{Kind.REGISTRY.value}' that is not a {wanted}: "
                            f"{type(error).__name__}: {error}") from None
    raise PeerError(f"{peer} sent {sorted(body)} where {wanted} was due")
