"""The federation file every party holds a copy of, and each party's private file: their schemas.

The federation file says who takes part (names, roles, addresses, the SHA-256 of each party's
token), what is predicted, the top, the training plan and seed, PSI and privacy settings, the
schedule and the network timeouts; the private file what only its party knows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, field_validator, model_validator

from splitrec_core.channel.flight.addresses import Timeouts, split_address
from splitrec_core.config import (
    BottomConfig,
    EngineConfig,
    Roster,
    RunSettings,
    Strict,
    TopConfig,
    check_roster,
)

if TYPE_CHECKING:
    pass


class Member(Strict):
    """A party as every other party knows it."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")
    address: str = Field(description="host:port where its Flight endpoint listens")
    token_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 of its bearer token (`splitrec certs` prints it); needed to run")

    @field_validator("address")
    @classmethod
    def _address_is_host_and_port(cls, address: str) -> str:
        split_address(address)
        return address


class TimeoutConfig(Strict):
    """How long a party waits for the others before it names the one that does not answer.

    The defaults are those of `channel.flight.addresses.Timeouts`.
    """

    connect_s: float = Field(default=Timeouts.connect_s, gt=0)
    recv_s: float = Field(default=Timeouts.recv_s, gt=0)
    backoff_s: float = Field(default=Timeouts.backoff_s, gt=0)
    backoff_max_s: float = Field(default=Timeouts.backoff_max_s, gt=0)


class Federation(RunSettings, Roster):
    """The shared federation file."""

    parties: list[Member] = Field(min_length=2)
    model: TopConfig = TopConfig()
    timeouts: TimeoutConfig = TimeoutConfig()
    insecure: bool = Field(default=False, description="plaintext and tokens only: a local trial")

    @model_validator(mode="after")
    def _roster_is_consistent(self) -> Federation:
        check_roster([p.name for p in self.parties], self.label_party, self.tasks, self.psi)
        return self

    def member(self, name: str) -> Member:
        """The party called `name`."""
        for party in self.parties:
            if party.name == name:
                return party
        raise KeyError(f"no party named '{name}' in federation '{self.name}'")

    def certificate_hosts(self) -> dict[str, list[str]]:
        """Per party, the host its certificate must name: the host of its address."""
        return {p.name: [split_address(p.address)[0]] for p in self.parties}


class CredentialFiles(Strict):
    """Paths of the party's CA certificate, certificate, key and token.

    Each is relative to the private file.
    """

    ca: str = "credentials/ca.pem"
    cert: str = "credentials/cert.pem"
    key: str = "credentials/key.pem"
    token: str = "credentials/token"


class PrivateParty(Strict):
    """A party's private file: what only it knows."""

    party: str
    file: str = Field(description="its data file, relative to this file")
    id_column: str = "id"
    categorical: list[str] = []
    numeric: list[str] = []
    split_column: str | None = None
    events: bool = Field(default=False, description="the label party: its file holds events, "
                                                      "many rows per ID (`PartyConfig.events`)")
    bottom: BottomConfig = BottomConfig()
    engine: EngineConfig = EngineConfig()
    credentials: CredentialFiles = CredentialFiles()
    listen: str | None = Field(default=None, description="host:port to listen on (default: all "
                                                         "interfaces, at its address's port)")
    score_input: str | None = Field(
        default=None, description="its new rows to score, relative to this file: the file a "
                                  "scoring run reads unless told another (`splitrec party serve` "
                                  "serves scoring runs only if it is set)")


def shared_settings(settings: RunSettings) -> dict[str, object]:
    """Every section every party shares (each field of `RunSettings`).

    As a config or a federation file holds them: what a federation file carries over, whole.
    """
    return {name: getattr(settings, name) for name in RunSettings.model_fields}


