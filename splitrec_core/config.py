"""The run configuration: parties, columns, tasks, model, training and privacy, read from TOML."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from splitrec_core.errors import InputError

M = TypeVar("M", bound=BaseModel)


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
    """One binary prediction task: the label party's column holding its 0/1 label, and its loss weight."""

    name: str
    column: str
    weight: float = Field(default=1.0, gt=0)


class BottomConfig(Strict):
    """A party's bottom network (with parties apart, each party's own, in its private file)."""

    embedding_dim: int = Field(default=4, ge=1)
    bottom_units: list[int] = [64]


class TopConfig(Strict):
    """What every party shares of the model: the cut width every bottom ends in, and the MMoE
    top (with parties apart, in the federation file)."""

    cut_dim: int = Field(default=32, ge=1, description="width of each party's embedding h_p")
    num_experts: int = Field(default=8, ge=1)
    expert_units: int = Field(default=16, ge=1)
    tower_units: int = Field(default=8, ge=1)


class ModelConfig(BottomConfig, TopConfig):
    """Sizes of the bottom networks and of the MMoE top."""


class TrainingConfig(Strict):
    """Optimisation settings shared by all parties (the batch order comes from `seed`)."""

    epochs: int = Field(default=5, ge=1)
    batch_size: int = Field(default=1024, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    learning_rate_decay: float = Field(
        default=1.0, gt=0, le=1, description="the learning rate is multiplied by this after every epoch")
    validation_fraction: float = Field(
        default=0.1, ge=0, lt=0.5,
        description="share of training rows held out to choose the epoch; 0 = keep the last epoch")
    patience: int = Field(default=5, ge=1, description="stop after this many epochs without a better "
                                                       "mean validation AUC")
    parties_in: Literal["threads", "processes", "flight"] = Field(
        default="threads", description="how `run` places the parties on this machine: threads of "
                                       "one process, a process each (own interpreter and runtime), "
                                       "or a process each talking Arrow Flight with mutual TLS on "
                                       "127.0.0.1, as parties on their own hosts do")
    own_cores: bool = Field(
        default=False, description="with parties_in = \"processes\" or \"flight\": the label "
                                   "party's process runs on half the cores, the others share the "
                                   "rest (as on hosts of their own) instead of the OS placing them")
    wire_dtype: Literal["float32", "float16"] = Field(
        default="float32", description="the float type embeddings and gradients cross the channel "
                                       "in: float16 halves the bytes; each party computes in float32")
    embed_ahead: int = Field(
        default=0, ge=0, le=2,
        description="batches a feature party embeds before the gradient of the oldest one it sent "
                    "returns: 0 = sequential (split training equals central training); 1 or 2 = "
                    "pipelined, its bottom one or two steps stale, so its work overlaps the label "
                    "party's")
    batches_per_message: int = Field(
        default=1, ge=1, le=8,
        description="training batches whose embeddings (and gradients) cross in one message: "
                    "each message costs the same CPU whatever its size, so fewer, larger ones "
                    "leave the parties more time to compute; above 1 a feature party waits for "
                    "gradients once per message, its bottom up to k - 1 batches stale (2k - 1 "
                    "with embed_ahead = 1)")
    xla: bool = Field(
        default=False,
        description="compile the training steps (each party's, and central training's) with XLA "
                    "into fused kernels, compiled before the first batch, that use every core (one "
                    "thread each when the parties step side by side, embed_ahead >= 1); equal to "
                    "central training compiled the same way up to float rounding")
    stream_buffer: int = Field(
        default=0, ge=0,
        description="0: every party reads its features whole and shuffles all fitting rows at "
                    "once (central training's order, so split training equals it); k > 0: every "
                    "party streams its features a row group (a million rows) at a time, the "
                    "groups in a seeded order and the rows of k groups shuffled together, so its "
                    "memory holds k row groups")
    loss_weighting: Literal["static", "uncertainty"] = Field(
        default="static", description="task weights as configured, or learned (Kendall et al. 2018)")
    seed: int = 7


class PrivacyConfig(Strict):
    """Gaussian noise on what crosses the cut layer; zero disables it."""

    clip_norm: float = Field(default=0.0, ge=0, description="per-row L2 clip of embeddings; 0 = none")
    embedding_noise: float = Field(default=0.0, ge=0, description="noise std on sent embeddings")
    gradient_noise: float = Field(default=0.0, ge=0, description="noise std on returned gradients")


class PsiConfig(Strict):
    """ID alignment settings."""

    domain: str = "splitrec-psi-v1"
    normalize: list[Literal["nfc", "strip", "lower", "digits"]] = Field(
        default=[], description="ID normalisations, in order (digits: keep digits only, for phones)")
    write_unmatched: bool = Field(
        default=False, description="each party writes its own IDs outside the intersection locally")
    chunk_size: int = Field(default=50_000, ge=1, description="IDs per chunk read and sent")


class ScheduleConfig(Strict):
    """When the served deployment retrains: a cron line read in an IANA time zone."""

    cron: str = "0 3 * * 1"
    timezone: str = "UTC"

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


def check_roster(names: list[str], label_party: str, tasks: list[TaskConfig]) -> None:
    """What every description of a run needs: unique party names, the label party among them,
    unique task names."""
    if len(set(names)) != len(names):
        raise ValueError(f"party names must be unique, got {names}")
    if label_party not in names:
        raise ValueError(f"label_party '{label_party}' is not one of the parties {names}")
    task_names = [t.name for t in tasks]
    if len(set(task_names)) != len(task_names):
        raise ValueError(f"task names must be unique, got {task_names}")


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


class RunSettings(Strict):
    """What every party of a run shares: the label party, the tasks and the training, privacy,
    PSI and schedule settings (a one-process config, or a federation file)."""

    name: str
    label_party: str
    tasks: list[TaskConfig] = Field(min_length=1)
    training: TrainingConfig = TrainingConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    psi: PsiConfig = PsiConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    registry: RegistryConfig = RegistryConfig()
    notify: NotifyConfig = NotifyConfig()

    @property
    def task_names(self) -> list[str]:
        """The tasks' names, in config order: the order of the top's outputs."""
        return [t.name for t in self.tasks]

    def hash(self) -> str:
        """SHA-256 of the settings (not of the file's bytes: comments and layout do not count)."""
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True)
                              .encode()).hexdigest()


class Config(RunSettings):
    """A whole run: who takes part, what is predicted and how the model is trained."""

    data_dir: str = "data"
    parties: list[PartyConfig] = Field(min_length=2)
    model: ModelConfig = ModelConfig()
    sweep: SweepConfig = SweepConfig()

    @property
    def engines(self) -> dict[str, EngineConfig]:
        """Where each party's heavy steps run."""
        return {p.name: p.engine for p in self.parties}

    @model_validator(mode="after")
    def _parties_are_consistent(self) -> Config:
        check_roster([p.name for p in self.parties], self.label_party, self.tasks)
        label = self.party(self.label_party)
        if label.split_column is None and not label.is_peer:
            raise ValueError(f"the label party '{label.name}' needs a split_column (train/test)")
        for party in self.parties:
            if party.name != self.label_party and party.split_column is not None:
                raise ValueError(f"only the label party has a split_column, not '{party.name}'")
            if party.name != self.label_party and not party.is_peer and not party.feature_columns:
                raise ValueError(f"feature party '{party.name}' declares no feature columns "
                                 f"(categorical or numeric); only the label party may hold none")
        return self

    def variants(self, source: Path | str = "<config>") -> list[tuple[dict[str, object], Config]]:
        """The sweep grid: each point's settings and the config that trains it.

        The grid is checked here, when a sweep asks for it, so a run never fails on a sweep it
        did not ask for; an error names `source` (the config file) and the key.
        """
        task_names = self.task_names
        grid_weights = self.sweep.task_weights or [[t.weight for t in self.tasks]]
        for weights in grid_weights:
            if len(weights) != len(self.tasks):
                raise InputError(source, None, f"key 'sweep.task_weights': {weights} needs one "
                                               f"weight per task {task_names}")
        out = []
        for experts in self.sweep.num_experts:
            for units in self.sweep.expert_units:
                for weights in grid_weights:
                    model = self.model.model_copy(update={"num_experts": experts, "expert_units": units})
                    tasks = [t.model_copy(update={"weight": w}) for t, w in zip(self.tasks, weights)]
                    point = {"num_experts": experts, "expert_units": units, "task_weights": weights}
                    out.append((point, self.model_copy(update={"model": model, "tasks": tasks})))
        return out

    @property
    def label(self) -> PartyConfig:
        """The party that holds the labels and the MMoE top."""
        return self.party(self.label_party)

    @property
    def feature_parties(self) -> list[PartyConfig]:
        """Every party but the label party, in config order."""
        return [p for p in self.parties if p.name != self.label_party]

    @property
    def followers(self) -> list[str]:
        """The feature parties' names, in config order: who follows the label party's lead."""
        return [p.name for p in self.feature_parties]

    @property
    def order(self) -> list[str]:
        """The label party, then the feature parties: the order of the top's inputs."""
        return [self.label_party, *self.followers]

    def party(self, name: str) -> PartyConfig:
        """Return the party called `name`."""
        for party in self.parties:
            if party.name == name:
                return party
        raise KeyError(f"no party named '{name}'")

    def party_file(self, party: PartyConfig, workdir: Path) -> Path:
        """Resolve a party's input file: relative to `data_dir`, itself relative to the workdir."""
        if party.is_peer:
            raise InputError(f"config '{self.name}'", f"parties.{party.name}.file",
                             "missing: in a one-process run every party needs its data file")
        data_dir = Path(self.data_dir)
        if not data_dir.is_absolute():
            data_dir = workdir / data_dir
        return data_dir / party.file


def load_config(path: Path) -> Config:
    """Read and validate a TOML config; an error names the file and the offending key.

    `extends = "other.toml"` (relative to this file) starts from that config: tables merge key by
    key, and everything else given here replaces the value there.
    """
    return parse_config(read_toml(Path(path)), source=path)


def read_toml(path: Path) -> dict[str, object]:
    """A TOML file's settings, `extends` resolved; an unreadable file is an error naming it."""
    try:
        settings = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, None, "config file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, None, f"config file is unreadable: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(path, None, f"not valid TOML: {exc}") from None
    base = settings.pop("extends", None)
    if base is None:
        return settings
    return _merge(read_toml(path.parent / str(base)), settings)


def _merge(base: dict[str, object], override: dict[str, object]) -> dict[str, object]:
    merged = dict(base)
    for key, value in override.items():
        old = merged.get(key)
        merged[key] = _merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return merged


def parse_config(settings: dict[str, object], source: Path | str = "<config>") -> Config:
    """Validate a config mapping, turning pydantic's report into one readable error."""
    return validated(Config, settings, source)


def with_changes(cfg: M, changes: dict[str, object], source: str) -> M:
    """`cfg` with `changes` ({"section.key": value}, None = unchanged) applied and checked again;
    a bad value is an error naming `source` and the key."""
    settings = cfg.model_dump()
    for dotted, value in changes.items():
        if value is not None:
            section, key = dotted.split(".")
            settings[section][key] = value
    return validated(type(cfg), settings, source)


def validated(model: type[M], settings: dict[str, object], source: Path | str) -> M:
    """`settings` as a `model`; pydantic's report becomes one error naming `source` and the keys."""
    try:
        return model.model_validate(settings)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            message = err["msg"].removeprefix("Value error, ")
            key = ".".join(str(part) for part in err["loc"])
            # a check across keys (no location) names its keys in its own message
            problems.append(f"key '{key}': {message}" if key else message)
        raise InputError(source, None, "; ".join(problems)) from None

