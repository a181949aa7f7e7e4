"""Model versions and the aliases that say which one is in use, kept by each party for its own part.

Every training run registers a version: each party copies its export into
`<its folder>/models/<model name>/<version>/` beside a `version.json` manifest. A version spans the
parties: all register their parts under the same version ID. The alias `current` (the champion)
names the version scoring uses; `candidate` names a newer version that was not promoted.

Each party's aliases are one JSON file replaced by a rename. A move that changes several parties'
aliases (promotion, rollback) first writes every party's new aliases to a journal beside the label
party's registry, then renames each party's file, then deletes the journal. A move cut short
between two renames is finished from the journal the next time the model's registries are opened,
so the parties never stay on different versions.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from splitrec_core.config import Config, RegistryConfig
from splitrec_core.errors import InputError
from splitrec_core.io import atomic_path, read_json, write_json
from splitrec_core.names import is_plain_name, plain_name
from splitrec_core.registry.promotion import Verdict, judge_against_champion
from splitrec_core.registry.provenance import code_version, file_sha256, fingerprint
from splitrec_core.workspace import Workspace

if TYPE_CHECKING:  # the registry is read without loading what evaluation needs
    from splitrec_core.report.metrics import VersionMetrics

ALIASES = ("current", "candidate")


@dataclass(frozen=True)
class Aliases:
    """Which version each alias names, and the champions before `current` (the latest last).

    Rollback returns to the latest of those champions.
    """

    current: str | None = None
    candidate: str | None = None
    previous: list[str] = field(default_factory=list)

    def promoted(self, version: str) -> Aliases:
        """`version` becomes the champion; the champion it replaces can be rolled back to."""
        if version == self.current:
            return self
        earlier = [*self.previous, self.current] if self.current else self.previous
        return Aliases(version, None if self.candidate == version else self.candidate, earlier)

    def rolled_back(self) -> Aliases:
        """The champion before `current` becomes the champion again."""
        if not self.previous:
            raise ValueError("nothing to roll back to: no version was champion before the "
                             "current one")
        return Aliases(self.previous[-1], self.candidate, self.previous[:-1])


@dataclass(frozen=True)
class Registry:
    """One party's registry of one model: `<party folder>/models/<model name>`."""

    party: str
    root: Path

    @property
    def alias_file(self) -> Path:
        """The file of the party's aliases."""
        return self.root / "aliases.json"

    def folder(self, version: str) -> Path:
        """Where the party's part of `version` lives (its export and `version.json`).

        A version's name may come from a peer: one that is not a plain name is refused.
        """
        return self.root / plain_name(version, f"model version of {self.party}")

    def holds(self, version: str) -> bool:
        """Whether the party has registered its part of `version`."""
        return (self.folder(version) / "version.json").is_file()

    def register(self, version: str, export: Path, manifest: dict[str, object]) -> Path:
        """Copy the party's `export` folder in as `version`, with `manifest` as its `version.json`.

        Registering a version again leaves the first copy as it was.
        """
        final = self.folder(version)
        if self.holds(version):
            return final
        with atomic_path(final) as tmp:
            shutil.copytree(export, tmp)
            write_json({"version": version, "party": self.party, **manifest}, tmp / "version.json")
        return final

    def versions(self) -> list[str]:
        """Every registered version, oldest first."""
        found = [p.name for p in self.root.glob("*")
                 if is_plain_name(p.name) and self.holds(p.name)]
        return sorted(found, key=lambda v: (str(self.manifest(v).get("registered_at", "")), v))

    def manifest(self, version: str) -> dict[str, object]:
        """`version`'s `version.json`; an unknown version is an error naming the party."""
        path = self.folder(version) / "version.json"
        if not path.is_file():
            registered = ", ".join(self.versions()) or "none"
            raise InputError(self.root, None, f"party '{self.party}' has no version '{version}' "
                                              f"(registered: {registered})")
        return read_json(path)

    def aliases(self) -> Aliases:
        """The party's aliases (none yet: all unset)."""
        if not self.alias_file.exists():
            return Aliases()
        return Aliases(**read_json(self.alias_file))

    def write_aliases(self, aliases: Aliases) -> None:
        """Replace the party's aliases with `aliases`."""
        write_json(asdict(aliases), self.alias_file)

    def resolve(self, name: str) -> str:
        """The version an alias (`current`, `candidate`) or a version ID names."""
        if name in ALIASES:
            version = getattr(self.aliases(), name)
            if version is None:
                raise InputError(self.alias_file, None, f"party '{self.party}' has no '{name}' "
                                                        "version yet")
            return version
        self.manifest(name)  # an unknown version fails here, naming the party
        return name


@dataclass(frozen=True)
class SharedModel:
    """One model's registries at every party (the label party's first), moved together."""

    registries: dict[str, Registry]

    def __post_init__(self) -> None:
        self._finish_interrupted_move()

    @classmethod
    def of(cls, cfg: Config, workdir: Path) -> SharedModel:
        """The config's model, in every party's folder of a one-process run folder."""
        parties = cfg.order
        return cls({p: Registry(p, Workspace(workdir).registry(p, cfg.name)) for p in parties})

    @property
    def journal(self) -> Path:
        """The journal of a move in progress, beside the label party's registry."""
        return next(iter(self.registries.values())).root / "move.json"

    def register(self, version: str, exports: dict[str, Path],
                 manifests: dict[str, dict[str, object]]) -> str:
        """Every party registers its part of `version`; the version becomes the candidate.

        `promote` decides whether it becomes the champion.
        """
        for party, registry in self.registries.items():
            registry.register(version, exports[party], manifests[party])
        self._move(lambda a: a if version == a.current else replace(a, candidate=version))
        return version

    def aliases(self) -> Aliases:
        """The aliases every party shares (the move journal keeps them equal)."""
        return next(iter(self.registries.values())).aliases()

    def manifest(self, version: str) -> dict[str, object]:
        """The label party's manifest of `version` (it holds the metrics)."""
        return next(iter(self.registries.values())).manifest(version)

    def parts(self, name: str) -> dict[str, Path]:
        """Every party's folder of the version `name` names (an alias is read at the label party).

        A party that lacks it is an error naming the party.
        """
        version = next(iter(self.registries.values())).resolve(name)
        return {party: r.folder(r.resolve(version)) for party, r in self.registries.items()}

    def promote(self, version: str) -> Aliases:
        """Every party's `current` becomes `version`, or, if any party lacks it, none does."""
        version = next(iter(self.parts(version).values())).name
        return self._move(lambda a: a.promoted(version))

    def rollback(self) -> Aliases:
        """Every party returns to the champion before the current one."""
        try:
            return self._move(Aliases.rolled_back)
        except ValueError as error:
            raise InputError(self.journal.parent, None, str(error)) from None

    def _move(self, change: Callable[[Aliases], Aliases]) -> Aliases:
        new = {party: change(r.aliases()) for party, r in self.registries.items()}
        write_json({party: asdict(a) for party, a in new.items()}, self.journal)
        self._finish_interrupted_move()
        return self.aliases()

    def _finish_interrupted_move(self) -> None:
        if not self.journal.exists():
            return
        planned = read_json(self.journal)
        for party, registry in self.registries.items():
            registry.write_aliases(Aliases(**planned[party]))
        self.journal.unlink()


def version_manifest(cfg: Config, settings_hash: str, metrics: VersionMetrics,
                     own_input: Path) -> dict[str, object]:
    """What a party records of a version.

    That is the shared settings' hash, the SHA-256 of its own input file (no other party's), the
    code, the run report's per-task metrics, training summary and leakage audit (`metrics`), and
    the privacy settings.
    """
    return {
        "model": cfg.name,
        "registered_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings_hash": settings_hash,
        "input_sha256": file_sha256(own_input),
        "code": code_version(),
        "metrics": {task: {k: m[k] for k in ("auc", "logloss")}
                    for task, m in metrics.tasks.items()},
        "training": metrics.training,
        "leakage": metrics.leakage,
        "privacy": cfg.privacy.model_dump(mode="json"),
    }


def register_run(cfg: Config, predictions: Path, exports: dict[str, Path],
                 metrics: VersionMetrics, workdir: Path) -> str:
    """Register every party's export of a run as one version of `cfg`'s model; its ID.

    The ID is taken from the settings and the run's test `predictions`, so a rerun that trained
    the same model registers nothing new. Each party's manifest records `metrics`.
    """
    version = fingerprint(cfg.model_dump(mode="json"), [predictions])[:12]
    manifests = {p: version_manifest(cfg, cfg.hash(), metrics,
                                     cfg.party_file(cfg.party(p), workdir))
                 for p in exports}
    return SharedModel.of(cfg, workdir).register(version, exports, manifests)


def promote_if_no_worse(model: SharedModel, version: str, rules: RegistryConfig) -> Verdict:
    """Judge `version` against the champion; make it current at every party if `rules` allow."""
    verdict = judge_against_champion(model, version, rules)
    if verdict.promote:
        model.promote(version)
    return verdict
