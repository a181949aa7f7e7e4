"""`splitrec models …` and `splitrec party models …`: the model registry, every party's versions.

With every party in one process, one command moves every party's aliases; with parties apart,
the label party moves them and each feature party follows over the channel.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from flows.cli.options import (
    Invite,
    RunId,
    Workdir,
    needs_run_id,
    plain_run_id,
    with_party_files,
)
from splitrec_core.errors import InputError

if TYPE_CHECKING:
    from splitrec_core.federation import PartyFiles
    from splitrec_core.registry import Aliases, Registry, SharedModel

models_app = typer.Typer(help="The model registry: every party's versions, and which one is "
                              "current.", no_args_is_help=True)
party_models_app = typer.Typer(help="Our part of the model registry with parties apart; the label "
                                    "party moves every party's aliases.", no_args_is_help=True)


def _registry(config: Path, workdir: Path | None) -> SharedModel:
    from splitrec_core.config import load_config
    from splitrec_core.registry import SharedModel

    cfg = load_config(config)
    return SharedModel.of(cfg, cfg.run_folder(workdir))


def _print_aliases(aliases: Aliases) -> None:
    typer.echo(f"current: {aliases.current}  candidate: {aliases.candidate}  "
               f"previous: {', '.join(aliases.previous) or '-'}")


def _print_versions(registry: Registry) -> None:
    """Every version in `registry`, oldest first, with its test AUCs and aliases."""
    aliases = registry.aliases()
    for version in registry.versions():
        manifest = registry.manifest(version)
        names = [n for n in ("current", "candidate") if getattr(aliases, n) == version]
        aucs = "  ".join(f"{t} {m['auc']:.4f}" for t, m in manifest["metrics"].items())
        typer.echo(f"{version}  {manifest['registered_at']}  {aucs}  {' '.join(names)}")


def _print_manifest(registry: Registry, version: str) -> None:
    typer.echo(json.dumps(registry.manifest(registry.resolve(version)), indent=2))


@models_app.command("list")
def models_list(config: Path, workdir: Workdir = None) -> None:
    """Every registered version, oldest first, with its test AUCs and aliases."""
    _print_versions(next(iter(_registry(config, workdir).registries.values())))


@models_app.command("show")
def models_show(config: Path, version: Annotated[str, typer.Argument()] = "current",
                workdir: Workdir = None,
                party: Annotated[str | None, typer.Option(help="Whose manifest (default: the "
                                                               "label party's).")] = None) -> None:
    """A version's manifest (VERSION may be an alias: current, candidate)."""
    model = _registry(config, workdir)
    _print_manifest(model.registries[party] if party else
                    next(iter(model.registries.values())), version)


@models_app.command("promote")
def models_promote(config: Path, version: str, workdir: Workdir = None) -> None:
    """Make VERSION (or the candidate) current at every party, or at none."""
    _print_aliases(_registry(config, workdir).promote(version))


@models_app.command("rollback")
def models_rollback(config: Path, workdir: Workdir = None) -> None:
    """Return every party to the champion before the current one."""
    _print_aliases(_registry(config, workdir).rollback())


def _own_registry(files: PartyFiles) -> Registry:
    from splitrec_core.apart.registry_protocol import own_registry
    from splitrec_core.workspace import Workspace

    return own_registry(files.load(), Workspace(files.workdir))


@party_models_app.command("list")
@with_party_files
def party_models_list(files: PartyFiles) -> None:
    """Every version in our registry, oldest first, with its test AUCs and our aliases."""
    _print_versions(_own_registry(files))


@party_models_app.command("show")
@with_party_files
def party_models_show(files: PartyFiles,
                      version: Annotated[str, typer.Argument()] = "current") -> None:
    """Our manifest of a version (VERSION may be an alias: current, candidate)."""
    _print_manifest(_own_registry(files), version)


def _move_apart(files: PartyFiles, run_id: str | None, invite: bool,
                change: Callable[[Aliases], Aliases] | None) -> None:
    """Our side of a move of every party's aliases.

    With `invite`, the label party first starts it at every serving feature party.
    """
    needs_run_id(run_id, invite)
    from splitrec_core.apart.registry_protocol import move_apart
    from splitrec_core.workspace import Workspace

    view = files.load()
    label = view.federation.label_party
    if (change is None) == (files.party == label):
        raise InputError(files.federation, None, f"the label party {label} promotes and rolls "
                                                 "back; a feature party follows")
    run_id = run_id or f"move-{uuid.uuid4().hex[:8]}"
    _print_aliases(move_apart(view, run_id, change, Workspace(files.workdir), invite))


@party_models_app.command("promote")
@with_party_files
def party_models_promote(files: PartyFiles, version: str, run_id: RunId = None,
                         invite: Invite = False) -> None:
    """Label party: make VERSION (or the candidate) current at every party, or at none."""
    from splitrec_core.apart.registry_protocol import promote

    _move_apart(files, run_id, invite, promote(version))


@party_models_app.command("rollback")
@with_party_files
def party_models_rollback(files: PartyFiles, run_id: RunId = None, invite: Invite = False) -> None:
    """Label party: return every party to the champion before the current one."""
    from splitrec_core.registry import Aliases

    _move_apart(files, run_id, invite, Aliases.rolled_back)


@party_models_app.command("follow")
@with_party_files
def party_models_follow(files: PartyFiles, run_id: Annotated[str, typer.Option(
                            callback=plain_run_id,
                            help="The move's ID, as the label party passed it.")]) -> None:
    """Feature party not serving: take part in the label party's promote or rollback."""
    _move_apart(files, run_id, False, None)
