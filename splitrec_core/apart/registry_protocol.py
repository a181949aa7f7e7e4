"""The model registry when the parties run apart: the label party decides, every party moves.

Each party keeps its own part of every version in its own registry, and the label party, which
holds the metrics, decides which version is current.

Two sessions, both led by the label party over the `registry` message kind (`messages`):
- `register_apart`, the last stage of a training run: every party registers its part as version
  `run_id`, and the label party's verdict moves every party's aliases;
- `move_apart` (`splitrec party models promote|rollback`): the label party asks every feature
  party whether it holds the version that is to become current; if one does not, nothing moves
  anywhere; otherwise each takes the label party's new aliases and confirms, and the label party
  moves its own last. Its `current`, which scoring follows, so never names a version a feature
  party lacks. A move cut short after a feature party moved is redone by the next move, which
  starts from the aliases the label party had planned (kept in a journal until every party
  confirmed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from splitrec_core.apart.jobs import Job
from splitrec_core.apart.messages import (
    Abort,
    Holds,
    HoldsVersion,
    Judged,
    Moved,
    NewAliases,
    Registered,
    receive,
    send,
)
from splitrec_core.apart.serving import invite
from splitrec_core.apart.sessions import session
from splitrec_core.channel import Channel
from splitrec_core.errors import InputError
from splitrec_core.federation import PartyView
from splitrec_core.io import read_json, write_json
from splitrec_core.names import plain_name
from splitrec_core.registry import Aliases, Registry, version_manifest
from splitrec_core.registry.promotion import Verdict, judge_against_champion
from splitrec_core.report import Report
from splitrec_core.workspace import Workspace


def own_registry(view: PartyView, workdir: Workspace) -> Registry:
    """This party's registry of the federation's model."""
    return Registry(view.me, workdir.registry(view.me, view.federation.name))


def refuse_a_finished_run(view: PartyView, run_id: str, workdir: Workspace) -> None:
    """Stop at once if run `run_id` already ran to its end at this party.

    A run registers its model as version `run_id`, and the registry keeps the first part
    registered under a name: a second run under that ID would report, export and register
    different models. A run cut short has registered nothing yet, so it resumes under its ID.
    """
    registry = own_registry(view, workdir)
    if registry.holds(plain_name(run_id, "run ID")):
        raise InputError(registry.folder(run_id), None,
                         f"run ID '{run_id}' already ran to its end: party '{view.me}' holds "
                         f"its model as version '{run_id}'. Every run needs a new --run-id "
                         f"(only a run cut short resumes under its own)")


def register_apart(view: PartyView, run_id: str, export: Path, report: Report | None,
                   workdir: Workspace) -> Verdict:
    """Register this party's export as version `run_id` of the federation's model.

    The part goes into this party's own registry. The label party judges the version
    against its champion and sends every feature party the version's metrics and the verdict;
    each registers its part, moves its aliases as the verdict says and confirms; the label party
    moves its own aliases last.
    """
    cfg, me, label = view.config, view.me, view.federation.label_party
    registry = own_registry(view, workdir)
    settings = view.federation.hash()
    with session(view, run_id, "register") as channel:
        if me != label:
            judged = receive(channel, label, Judged)
            registry.register(run_id, export, version_manifest(cfg, settings, judged.metrics,
                                                               view.data_file))
            registry.write_aliases(_moved(registry.aliases(), judged.verdict))
            send(channel, label, Registered(run_id))
            return judged.verdict
        assert report is not None  # the label party evaluated the run
        metrics = report.version_metrics
        registry.register(run_id, export, version_manifest(cfg, settings, metrics, view.data_file))
        verdict = judge_against_champion(registry, run_id, cfg.registry)
        for party in cfg.followers:
            send(channel, party, Judged(metrics, verdict))
        for party in cfg.followers:
            receive(channel, party, Registered)
        registry.write_aliases(_moved(registry.aliases(), verdict))
    return verdict


def _moved(aliases: Aliases, verdict: Verdict) -> Aliases:
    """The aliases after `verdict`: its version current, or the candidate."""
    if verdict.promote:
        return aliases.promoted(verdict.version)
    return replace(aliases, candidate=verdict.version)


def promote(version: str) -> Callable[[Aliases], Aliases]:
    """The move that makes `version` current."""
    return lambda aliases: aliases.promoted(version)


def move_apart(view: PartyView, run_id: str, change: Callable[[Aliases], Aliases] | None,
               workdir: Workspace, invite_parties: bool = False) -> Aliases:
    """Move every party's aliases in session `run_id`; this party's aliases afterwards.

    At the label party by `change` (`promote`, `Aliases.rolled_back`), at a feature party
    (`change` None) as the label party says. Every party moves, or none does: a version a
    feature party lacks is an error naming it, and nothing moves. With `invite_parties`, the
    label party first starts the move at the serving feature parties (once it knows the move is
    possible here).
    """
    label = view.federation.label_party
    registry = own_registry(view, workdir)
    if view.me != label:
        with session(view, run_id, "models") as channel:
            return _follow(channel, registry, label)
    assert change is not None  # the label party decides the move
    journal = registry.root / "apart-move.json"
    planned = Aliases(**read_json(journal)) if journal.exists() else registry.aliases()
    try:
        new = change(planned)
    except ValueError as error:  # e.g. nothing to roll back to
        raise InputError(registry.root, None, str(error)) from None
    target = registry.resolve(str(new.current))  # the label party lacks it: an error here
    followers = view.config.followers
    if invite_parties:
        invite(view, run_id, Job.MODELS)
    with session(view, run_id, "models") as channel:
        for party in followers:
            send(channel, party, HoldsVersion(target))
        lacking = [p for p in followers if not receive(channel, p, Holds).holds]
        if lacking:
            lack = "lacks" if len(lacking) == 1 else "lack"
            why = f"{', '.join(lacking)} {lack} version {target}"
            for party in followers:
                send(channel, party, Abort(why))
            raise InputError(registry.root, None, f"nothing moved: {why}")
        write_json(asdict(new), journal)
        for party in followers:
            send(channel, party, NewAliases(new))
        for party in followers:
            receive(channel, party, Moved)
    registry.write_aliases(new)
    journal.unlink()
    return new


def _follow(channel: Channel, registry: Registry, label: str) -> Aliases:
    """A feature party's side of a move.

    Say whether it holds the version, then take the label party's aliases (or keep its own if
    the move was called off).
    """
    asked = receive(channel, label, HoldsVersion)
    send(channel, label, Holds(registry.holds(asked.version)))
    order = receive(channel, label, NewAliases, Abort)
    if isinstance(order, Abort):
        return registry.aliases()
    registry.write_aliases(order.aliases)
    send(channel, label, Moved())
    return order.aliases
