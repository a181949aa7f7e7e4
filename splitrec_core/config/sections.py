"""The sections of a run's configuration, each a strict model with its defaults."""

from __future__ import annotations

from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from splitrec_core.extras import RR22_INSTALL_HINT, spu_missing


class Strict(BaseModel):
    """A config section that rejects keys it does not know, so a typo is an error, not a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class EngineConfig(Strict):
    """Where the party's heavy steps run (`engine`): see `splitrec_core.engine`."""

    kind: Literal["local", "dask"] = "local"
    address: str = Field(default="local", pattern=r"^(local|tcp://.+)$",
                         description='"local": a LocalCluster for the step; else its scheduler')
    workers: int = Field(default=2, gt=0, description="LocalCluster worker processes")
    memory_limit: str = Field(default="2GiB", description="per LocalCluster worker")


class PartyConfig(Strict):
    """One organisation: its table, its ID column and the columns it contributes as features."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")
    file: str | None = Field(default=None, description="none: a party of a federation that runs "
                                                         "on its own host; only its name is known")
    id_column: str = "id"
    categorical: list[str] = []
    numeric: list[str] = []
    split_column: str | None = None
    events: bool = Field(
        default=False, description="the label party only: its file holds events, any number of "
                                   "rows per ID (e.g. impressions with item columns); PSI aligns "
                                   "the distinct IDs, training batches users and the split is "
                                   "by user")
    engine: EngineConfig = EngineConfig()

    @property
    def feature_columns(self) -> list[str]:
        """Categorical then numeric columns, the order the bottom network sees them in."""
        return [*self.categorical, *self.numeric]

    @classmethod
    def peer(cls, name: str) -> PartyConfig:
        """Another party of a federation, as this party knows it: by name alone."""
        return cls(name=name)

    @property
    def is_peer(self) -> bool:
        """Whether this party's data is elsewhere (parties apart)."""
        return self.file is None

    @model_validator(mode="after")
    def _columns_are_distinct(self) -> PartyConfig:
        if self.is_peer:
            return self
        seen: set[str] = set()
        for column in [self.id_column, *self.feature_columns]:
            if column in seen:
                raise ValueError(f"column '{column}' is declared twice in party '{self.name}'")
            seen.add(column)
        return self


class TaskConfig(Strict):
    """One binary prediction task: the label party's column of its 0/1 label, and its weight."""

    name: str
    column: str
    weight: float = Field(default=1.0, gt=0)


class BottomConfig(Strict):
    """A party's bottom network (with parties apart, each party's own, in its private file)."""

    embedding_dim: int = Field(default=4, ge=1)
    bottom_units: list[int] = [64]


class TopConfig(Strict):
    """What every party shares of the model: the cut width every bottom ends in, and the top.

    The top is an MMoE or a PLE (with parties apart, it is set in the federation file).
    """

    cut_dim: int = Field(default=32, ge=1, description="width of each party's embedding h_p")
    kind: Literal["mmoe", "ple"] = Field(
        default="mmoe", description="mmoe: experts shared by all tasks, a gate per task (Ma et "
                                    "al. 2018); ple: shared and task-specific experts over "
                                    "levels of progressive extraction (Tang et al. 2020)")
    num_experts: int = Field(default=8, ge=1, description="experts (ple: shared experts per level)")
    expert_units: int = Field(default=16, ge=1)
    tower_units: int = Field(default=8, ge=1)
    task_experts: int = Field(default=2, ge=1, description="ple: each task's own experts per level")
    levels: int = Field(default=2, ge=1, description="ple: extraction levels")


class ModelConfig(BottomConfig, TopConfig):
    """Sizes of the bottom networks and of the MMoE top."""


class PrivacyConfig(Strict):
    """Gaussian noise on what crosses the cut layer; zero disables it."""

    clip_norm: float = Field(default=0.0, ge=0,
                             description="per-row L2 clip of embeddings; 0 = none")
    embedding_noise: float = Field(default=0.0, ge=0, description="noise std on sent embeddings")
    gradient_noise: float = Field(default=0.0, ge=0, description="noise std on returned gradients")


class PsiConfig(Strict):
    """ID alignment settings."""

    domain: str = "splitrec-psi-v1"
    normalize: list[Literal["nfc", "strip", "lower", "digits"]] = Field(
        default=[],
        description="ID normalisations, in order (digits: keep digits only, for phones)")
    write_unmatched: bool = Field(
        default=False, description="each party writes its own IDs outside the intersection locally")
    chunk_size: int = Field(default=50_000, ge=1, description="IDs per chunk read and sent")
    protocol: Literal["ecdh", "rr22"] = Field(
        default="ecdh", description="ecdh: splitrec's own X25519 exchange; rr22: SecretFlow's "
                                    "RR22 through spu (`pip install 'splitrec[rr22]'`), "
                                    "pairwise with the label party as receiver (`psi_rr22`)")
    rr22_reveal_pairwise: bool = Field(
        default=False, description="rr22 with three or more parties: accept that each feature "
                                   "party learns which of its IDs it shares with the label party, "
                                   "not only those every party shares")
    rr22_port: int = Field(
        default=29400, ge=1024, le=65000,
        description="rr22, parties apart: pair i (feature parties in federation order) listens "
                    "on this port + 2i at the label party's host and + 2i + 1 at the feature "
                    "party's; below the ports the OS gives outgoing connections (Linux: from "
                    "32768), where a party on the same host dialing before its peer listens "
                    "could connect to itself")
    rr22_timeout_s: float = Field(
        default=120.0, gt=0, description="rr22: how long a party waits for its pair's peer to "
                                         "connect or answer before it stops, naming the peer")

    @field_validator("protocol")
    @classmethod
    def _protocol_can_run(cls, protocol: str) -> str:
        if protocol == "rr22" and spu_missing():
            raise ValueError(RR22_INSTALL_HINT)
        return protocol


class ChannelConfig(Strict):
    """How large a message between parties may be, and what a party holds of a peer's unread ones.

    Every party must have the same (parties apart: it is in the federation file). The defaults
    are `channel.contract.Limits`', which takes these keys by name (`Limits.in_mb`).
    """

    max_message_mb: int = Field(
        default=256, ge=1,
        description="the largest message a party sends or accepts (MiB); the largest the "
                    "protocols send is PSI's positions, 8 bytes per shared ID, then a chunk of "
                    "scoring embeddings")
    inbox_mb: int = Field(
        default=16, ge=1,
        description="what a party holds of one peer's messages it has not taken yet (MiB, or one "
                    "message if larger); past it the peer's sends wait (back-pressure)")


class ScheduleConfig(Strict):
    """When the served deployment retrains: a cron line read in an IANA time zone."""

    cron: str = "0 3 * * 1"
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron_line(cls, line: str) -> str:
        """Refuse what Prefect's cron schedules refuse, so serving never fails on it later."""
        if not croniter.is_valid(line) or any(f.lower() in ("r", "h") for f in line.split()):
            raise ValueError(f"'{line}' is not a cron line: five fields, minute hour day month "
                             f"weekday (e.g. '0 3 * * 1', Mondays 03:00)")
        return line

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"'{zone}' is not an IANA time zone (e.g. 'Europe/Berlin')") from None
        return zone


class SweepConfig(Strict):
    """The grid `splitrec sweep` trains over (every combination)."""

    num_experts: list[int] = Field(default=[4, 8], min_length=1)
    expert_units: list[int] = Field(default=[8, 16], min_length=1)
    task_weights: list[list[float]] | None = Field(
        default=None, min_length=1,
        description="one weight per task, in task order (default: the tasks' own weights)")


class RegistryConfig(Strict):
    """When a newly trained version replaces the champion (`current`) in the model registry."""

    promotion_margin: float = Field(
        default=0.005, ge=0, description="the largest fall in any task's test AUC below the "
                                          "champion's with which a new version is still promoted")
    max_leakage_auc: float = Field(
        default=1.0, ge=0.5, le=1.0,
        description="the highest attack AUC of the leakage audit a promoted version may have "
                    "(0.5 = the attacks learn nothing; 1.0 = no bound)")


class NotifyConfig(Strict):
    """Who hears of a failed run (the log names the failed step and party either way)."""

    block: str | None = Field(
        default=None, description="a Prefect notification block as '<block type>/<name>' (e.g. "
                                  "'slack-webhook/ops', made in the UI under Blocks), told when "
                                  "a run fails")

    @field_validator("block")
    @classmethod
    def _type_and_name(cls, block: str | None) -> str | None:
        if block is None:
            return None
        kind, _, name = block.partition("/")
        if not kind or not name or "/" in name:
            raise ValueError(f"'{block}' is not '<block type>/<name>' (e.g. 'slack-webhook/ops')")
        return block
