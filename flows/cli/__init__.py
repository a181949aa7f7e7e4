"""The `splitrec` command line: fetch data, run the pipeline, serve it on a schedule.

This package assembles `app` from its command modules: `run` (every party in this process),
`party` (each party on its own host), `models` (the registry) and `data` (example data).
"""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli import data, models, party, run
from flows.cli.bootstrap import set_environment_defaults
from flows.cli.exit_codes import ExitCodes

set_environment_defaults()  # before any command imports Prefect

app = typer.Typer(cls=ExitCodes, help="Vertically federated split MMoE, orchestrated by Prefect.",
                  no_args_is_help=True, pretty_exceptions_enable=False)


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        typer.echo(f"splitrec {version('splitrec')}")
        raise typer.Exit()


@app.callback()
def _options(show_version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print the installed version and exit.")] = False) -> None:
    """The options before any command (`--version`)."""


app.add_typer(run.commands)
app.add_typer(party.commands)
app.add_typer(data.data_app, name="data")
party.party_app.add_typer(models.party_models_app, name="models")
app.add_typer(party.party_app, name="party")
app.add_typer(models.models_app, name="models")
