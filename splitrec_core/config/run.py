"""What a run is: the settings every party shares, and a whole one-process run.

`RunSettings` is what every party shares; `Config` adds the parties, the model and the sweep
grid.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pydantic import Field, model_validator

from splitrec_core.config.sections import (
    ChannelConfig,
    EngineConfig,
    ModelConfig,
    NotifyConfig,
    PartyConfig,
    PrivacyConfig,
    PsiConfig,
    RegistryConfig,
    ScheduleConfig,
    Strict,
    SweepConfig,
    TaskConfig,
)
from splitrec_core.config.training import TrainingConfig
from splitrec_core.errors import InputError


class Named(Protocol):
    """A party as a roster lists it (read only: config sections are frozen)."""

    @property
    def name(self) -> str:
        """The party's name."""


class Roster:
    """The parties of a run in the order every party uses: the label party, then the others.

    For a one-process config and a federation file alike (each lists its `parties`).
    """

    if TYPE_CHECKING:
        label_party: str
        parties: Sequence[Named]

    @property
    def followers(self) -> list[str]:
        """Every party but the label party, as listed: who follows the label party's lead."""
        return [p.name for p in self.parties if p.name != self.label_party]

    @property
    def order(self) -> list[str]:
        """The label party, then the others as listed: the order of the top's inputs."""
        return [self.label_party, *self.followers]


def check_roster(names: list[str], label_party: str, tasks: list[TaskConfig],
                 psi: PsiConfig) -> None:
    """Check what every description of a run needs.

    That is unique party names, the label party among them, unique task names, and a PSI
    protocol whose privacy the parties accepted.
    """
    if len(set(names)) != len(names):
        raise ValueError(f"party names must be unique, got {names}")
    if label_party not in names:
        raise ValueError(f"label_party '{label_party}' is not one of the parties {names}")
    if psi.protocol == "rr22" and len(names) > 2 and not psi.rr22_reveal_pairwise:
        raise ValueError(
            f"[psi] protocol 'rr22' with {len(names)} parties runs a pair per feature party: each "
            f"would learn which of its IDs it shares with '{label_party}', not only those all "
            f"parties share; set rr22_reveal_pairwise = true to accept that, or use 'ecdh'")
    task_names = [t.name for t in tasks]
    if len(set(task_names)) != len(task_names):
        raise ValueError(f"task names must be unique, got {task_names}")


class RunSettings(Strict):
    """What every party of a run shares (a one-process config, or a federation file).

    That is the label party, the tasks and the training, privacy, PSI, channel and schedule
    settings.
    """

    name: str
    label_party: str
    tasks: list[TaskConfig] = Field(min_length=1)
    training: TrainingConfig = TrainingConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    psi: PsiConfig = PsiConfig()
    channel: ChannelConfig = ChannelConfig()
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


class Config(RunSettings, Roster):
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
        check_roster([p.name for p in self.parties], self.label_party, self.tasks, self.psi)
        label = self.party(self.label_party)
        if label.split_column is None and not label.is_peer:
            raise ValueError(f"the label party '{label.name}' needs a split_column (train/test)")
        for party in self.parties:
            if party.name != self.label_party and party.split_column is not None:
                raise ValueError(f"only the label party has a split_column, not '{party.name}'")
            if party.name != self.label_party and party.events:
                raise ValueError(f"only the label party may hold events (many rows per ID), not "
                                 f"'{party.name}': a feature party holds one row per person")
            if party.name != self.label_party and not party.is_peer and not party.feature_columns:
                raise ValueError(f"feature party '{party.name}' declares no feature columns "
                                 f"(categorical or numeric); only the label party may hold none")
        if label.events and self.training.stream_buffer:
            raise ValueError("events at the label party are read whole: set training."
                             "stream_buffer = 0")
        if label.events and self.training.xla:
            raise ValueError("events at the label party: a batch's events vary in number, and "
                             "XLA compiles a step per shape; set training.xla = false")
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
                    model = self.model.model_copy(
                        update={"num_experts": experts, "expert_units": units})
                    tasks = [t.model_copy(update={"weight": w})
                             for t, w in zip(self.tasks, weights)]
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

    def party(self, name: str) -> PartyConfig:
        """Return the party called `name`."""
        for party in self.parties:
            if party.name == name:
                return party
        raise KeyError(f"no party named '{name}'")

    def run_folder(self, given: Path | None = None) -> Path:
        """Where a run of this config keeps its files: `given`, else `runs/<config name>`."""
        return given or Path("runs") / self.name

    def party_file(self, party: PartyConfig, workdir: Path) -> Path:
        """Resolve a party's input file: relative to `data_dir`, itself relative to the workdir."""
        if party.file is None:  # a peer: its data is elsewhere
            raise InputError(f"config '{self.name}'", f"parties.{party.name}.file",
                             "missing: in a one-process run every party needs its data file")
        data_dir = Path(self.data_dir)
        if not data_dir.is_absolute():
            data_dir = workdir / data_dir
        return data_dir / party.file
