"""The options several commands share, and the one declaration of a party's files.

Every `splitrec party …` command but `trial` takes the same four: FEDERATION, --party,
--private and --workdir. `with_party_files` declares them once and hands the command one
`PartyFiles`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

Workdir = Annotated[Path | None, typer.Option(help="Run folder (default: runs/<config name>).")]
PartyName = Annotated[str, typer.Option(help="Which party of the federation we are.")]
PrivateFile = Annotated[Path | None, typer.Option(
    help="Our private party file (default: party.toml beside FEDERATION).")]
PartyWorkdir = Annotated[Path | None, typer.Option(
    help="Our run folder (default: run beside FEDERATION).")]


def plain_run_id(value: str | None) -> str | None:
    """A run ID becomes a folder name at every party: refuse one that is not a plain name.

    As bad input: one line, exit code 2.
    """
    from splitrec_core.names import plain_name

    return None if value is None else plain_name(value, "--run-id")


RunId = Annotated[str | None, typer.Option(
    callback=plain_run_id,
    help="The run's ID, new for every run; every party of the run passes the same one (with "
         "--invite the label party makes one): 1 to 64 letters, digits, '.', '_' or '-'.")]
Invite = Annotated[bool, typer.Option(
    help="Label party: first start the run at every serving feature party.")]


def needs_run_id(run_id: str | None, invite: bool) -> None:
    """Stop a run that neither has an ID nor is started by the label party with --invite."""
    if run_id is None and not invite:
        raise typer.BadParameter("every party of a run passes the same new --run-id (or the "
                                 "label party starts it with --invite)")


_KEYWORD = inspect.Parameter.KEYWORD_ONLY
# Before the command's own parameters: FEDERATION is the first argument, --party comes first
_LEADING = [inspect.Parameter("federation", _KEYWORD, annotation=Path),
            inspect.Parameter("party", _KEYWORD, annotation=PartyName)]
_TRAILING = [inspect.Parameter("private", _KEYWORD, annotation=PrivateFile, default=None),
             inspect.Parameter("workdir", _KEYWORD, annotation=PartyWorkdir, default=None)]


def with_party_files(command: Callable[..., None]) -> Callable[..., None]:
    """Declare FEDERATION, --party, --private and --workdir once for a party's `command`.

    `command` takes the `PartyFiles` they name as its first parameter. typer reads a command's
    parameters from its signature: the returned function's is these four around the command's
    own.
    """
    # Only the command's own parameters are evaluated for typer; PartyFiles is imported when a
    # command runs, so `splitrec --help` does not load the core library
    own = list(inspect.signature(command, eval_str=True,
                                 locals={"PartyFiles": object}).parameters.values())[1:]

    @functools.wraps(command)
    def with_files(*, federation: Path, party: str, private: Path | None, workdir: Path | None,
                   **options: Any) -> None:
        from splitrec_core.federation import PartyFiles

        command(PartyFiles(federation=federation, party=party, private=private, workdir=workdir),
                **options)

    parameters = [*_LEADING, *(p.replace(kind=_KEYWORD) for p in own), *_TRAILING]
    with_files.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    with_files.__annotations__ = {p.name: p.annotation for p in parameters}
    return with_files
