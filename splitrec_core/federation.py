"""Parties apart: the federation file every party holds a copy of, and each party's private file.

The federation file says who takes part (names, roles, addresses, the SHA-256 of each party's
token), what is predicted, the MMoE top, the cut width, the training plan and seed, PSI and
privacy settings, the schedule and the network timeouts. A party's private file says what only
it knows: its data file, ID column, columns and their kinds, its bottom network, its
credentials. `party_view` joins the two into the `Config` the core library runs on, in which the
other parties are names only: no party learns another's columns or paths.

The parties compare `federation_hash` (of the parsed settings, so comments and layout do not
count) when they connect; a mismatch stops every party.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, field_validator, model_validator

from splitrec_core.certs import PartyCredentials
from splitrec_core.channel.flight.addresses import Timeouts, split_address
from splitrec_core.config import (
    BottomConfig,
    Config,
    EngineConfig,
    PartyConfig,
    Roster,
    RunSettings,
    Strict,
    TopConfig,
    check_roster,
    read_toml,
    validated,
)
from splitrec_core.errors import InputError
from splitrec_core.io import write_bytes

if TYPE_CHECKING:
    from splitrec_core.channel.flight.auth import Security


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


class PartyView:
    """One party's side of a federation: its private settings and the shared ones.

    It also holds the `Config` the core library runs on (`config`), in which the other parties
    are names only.
    """

    def __init__(self, federation: Federation, private: PrivateParty, private_file: Path) -> None:
        self.federation, self.private = federation, private
        self.private_file, self.folder = private_file, private_file.parent
        self.me = private.party
        self.config = _as_config(federation, private)

    @property
    def data_file(self) -> Path:
        """Its data file (relative paths are relative to its private file)."""
        return self.folder / self.private.file

    def rows_to_score(self, given: str | Path | None = None) -> Path:
        """The new rows a scoring run reads: `given`, else its private file's `score_input`."""
        if given is not None:
            return Path(given).resolve()
        if self.private.score_input is None:
            raise InputError(self.private_file, None, "no rows to score: give the file "
                                                    "(--input) or set score_input")
        return (self.folder / self.private.score_input).resolve()

    @property
    def listen(self) -> str:
        """Where its endpoint listens: `listen`, else its address's port.

        On a loopback address (a trial on one machine) it listens on the loopback alone, else on
        every interface (the address may be a name, or a relay's, that this host cannot bind).
        """
        host, port = split_address(self.federation.member(self.me).address)
        return self.private.listen or f"{'127.0.0.1' if _is_loopback(host) else '0.0.0.0'}:{port}"

    @property
    def peers(self) -> dict[str, str]:
        """Every other party's address."""
        return {p.name: p.address for p in self.federation.parties if p.name != self.me}

    @property
    def token_hashes(self) -> dict[str, str]:
        """Every party's token hash (`load_party` checked that each has one)."""
        return {p.name: str(p.token_sha256) for p in self.federation.parties}

    def credentials(self) -> PartyCredentials:
        """Where its credential files are."""
        files = self.private.credentials
        return PartyCredentials(*(self.folder / getattr(files, k)
                                  for k in ("ca", "cert", "key", "token")))

    def security(self) -> Security:
        """Its credentials, read now (loading Flight: reading a federation file does not)."""
        from splitrec_core.channel.flight.auth import Security

        return Security.from_files(self.credentials(), self.federation.insecure)

    def timeouts(self) -> Timeouts:
        """The federation's timeouts."""
        return Timeouts(**self.federation.timeouts.model_dump())


def shared_settings(settings: RunSettings) -> dict[str, object]:
    """Every section every party shares (each field of `RunSettings`).

    As a config or a federation file holds them: what a federation file carries over, whole.
    """
    return {name: getattr(settings, name) for name in RunSettings.model_fields}


def _as_config(federation: Federation, private: PrivateParty) -> Config:
    me = PartyConfig(name=private.party, file=private.file, id_column=private.id_column,
                     categorical=private.categorical, numeric=private.numeric,
                     split_column=private.split_column, events=private.events,
                     engine=private.engine)
    peers = [PartyConfig.peer(name) for name in federation.order if name != private.party]
    model = federation.model.model_dump() | private.bottom.model_dump()
    return Config(**shared_settings(federation), data_dir=".", model=model,
                  parties=sorted([me, *peers], key=lambda p: federation.order.index(p.name)))


def load_party(federation_file: Path, private_file: Path, party: str) -> PartyView:
    """Read `party`'s copy of the federation file and its private file; errors name the file."""
    federation = validated(Federation, read_toml(federation_file), federation_file)
    private = validated(PrivateParty, read_toml(private_file), private_file)
    if private.party != party:
        raise InputError(private_file, None, f"it is {private.party}'s private file, not {party}'s")
    if party not in federation.order:
        raise InputError(federation_file, None, f"no party '{party}' among {federation.order}")
    unhashed = [p.name for p in federation.parties if p.token_sha256 is None]
    if unhashed:
        raise InputError(federation_file, None, f"no token_sha256 for {unhashed} (`splitrec "
                                                f"certs` prints them)")
    try:
        return PartyView(federation, private, private_file)
    except ValueError as error:  # the two files together do not make a valid run
        raise InputError(f"{federation_file} + {private_file}", None, str(error)) from None


class PartyFiles(Strict):
    """Where one party's files are: its federation file copy, its name, private file, run folder.

    What a party's `splitrec party` commands (but `trial`) and its flows start from. The
    private file defaults to `party.toml` beside the federation file, the run folder to `run`
    beside it (so both may be left out, in a deployment's parameters too); both are made
    absolute, so a deployment's runs find them from anywhere. The federation file stays as
    given, so errors name it as the user wrote it.
    """

    federation: Path = Field(description="its copy of the federation file")
    party: str = Field(description="which party of the federation it is")
    private: Path | None = Field(default=None, description="its private file (default: "
                                                           "party.toml beside the federation file)")
    workdir: Path | None = Field(default=None, description="its run folder (default: run beside "
                                                           "the federation file)")

    @model_validator(mode="before")
    @classmethod
    def _defaults_beside_the_federation_file(cls, given: object) -> object:
        if not isinstance(given, dict) or "federation" not in given:
            return given  # nothing to fill in, or nothing to fill it in from
        beside = Path(given["federation"]).parent
        return given | {
            "private": Path(given.get("private") or beside / "party.toml").resolve(),
            "workdir": Path(given.get("workdir") or beside / "run").resolve()}

    def load(self) -> PartyView:
        """Read the party's copy of the federation file and its private file."""
        assert self.private is not None  # filled in on validation
        return load_party(self.federation, self.private, self.party)


def _is_loopback(host: str) -> bool:
    """Whether `host` names this machine's loopback (`localhost`, 127.0.0.0/8, ::1)."""
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name
        return False


def write_trial_federation(cfg: Config, data_files: dict[str, Path], out_dir: Path,
                           base_port: int, host: str = "127.0.0.1",
                           ) -> dict[str, tuple[Path, Path]]:
    """Split a one-process config into a trial federation on `host`.

    The label party listens on `base_port`, the others in config order on the ports after it
    (on 127.0.0.1 alone, the default for a loopback address: `PartyView.listen`).
    For each party a folder `out_dir/<party>/` with its copy of `federation.toml`, its private
    `party.toml`, its data file and its credentials (a fresh CA for all). Returns party →
    (federation file, private file). What a real federation's parties each write for
    themselves.
    """
    import shutil

    import tomli_w

    from splitrec_core.certs import make_trial_credentials

    order = cfg.order
    staging = out_dir / ".credentials"
    made = make_trial_credentials({p: [host, "localhost"] for p in order}, staging)
    federation = Federation(
        **shared_settings(cfg) | {"training": cfg.training.model_copy(
            update={"parties_in": "threads"})},  # parties apart place themselves
        parties=[Member(name=p, address=f"{host}:{base_port + i}",
                        token_sha256=made[p].token_sha256()) for i, p in enumerate(order)],
        model=TopConfig(**{k: getattr(cfg.model, k) for k in TopConfig.model_fields}))
    shared = tomli_w.dumps(federation.model_dump(mode="json", exclude_none=True))
    written = {}
    for party in cfg.parties:
        folder = out_dir / party.name
        data = folder / "data" / data_files[party.name].name
        data.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(data_files[party.name], data)
        shutil.copytree(staging / party.name, folder / "credentials", dirs_exist_ok=True)
        private = PrivateParty(
            party=party.name, file=str(data.relative_to(folder)), id_column=party.id_column,
            categorical=party.categorical, numeric=party.numeric,
            split_column=party.split_column, events=party.events, engine=party.engine,
            bottom=BottomConfig(embedding_dim=cfg.model.embedding_dim,
                                bottom_units=cfg.model.bottom_units))
        federation_file = write_bytes(shared.encode(), folder / "federation.toml")
        private_file = write_bytes(
            tomli_w.dumps(private.model_dump(mode="json", exclude_none=True)).encode(),
            folder / "party.toml")
        written[party.name] = (federation_file, private_file)
    shutil.rmtree(staging)
    return written
