"""One party's view of a federation: its private file joined with the shared one.

`load_party` reads both and gives the `Config` the core library runs on, in which the other
parties are names only: no party learns another's columns or paths. `PartyFiles` names the files
a party's commands and flows read.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from splitrec_core.certs import PartyCredentials
from splitrec_core.channel.flight.addresses import Timeouts, split_address
from splitrec_core.config import (
    Config,
    PartyConfig,
    Strict,
    read_toml,
    validated,
)
from splitrec_core.errors import InputError
from splitrec_core.federation.files import Federation, PrivateParty, shared_settings

if TYPE_CHECKING:
    from splitrec_core.channel.flight.auth import Security


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

        return Security.from_files(self.credentials(), self.federation.insecure, self.me)

    def timeouts(self) -> Timeouts:
        """The federation's timeouts."""
        return Timeouts(**self.federation.timeouts.model_dump())


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


