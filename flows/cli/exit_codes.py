"""The one place the command line turns errors into exit codes.

Bad input (`InputError`: it names the file, the column and the problem) is the user's to fix:
one red line `error: …` and exit code 2. A peer that did not answer or refused (`PeerError`) is
one red line and exit code 1: running again may succeed (a move of every party's aliases cut
short is redone by the next). Any other error keeps its traceback: it is a bug to report.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

from splitrec_core.errors import InputError


class ExitCodes(TyperGroup):
    """The `splitrec` command group: runs any of its commands, its errors turned to exit codes."""

    def invoke(self, ctx: typer.Context) -> Any:
        """Run the command `ctx` names; bad input exits with 2, a failing peer with 1."""
        try:
            return super().invoke(ctx)
        except InputError as error:
            _exit(error, code=2)
        except Exception as error:
            # A PeerError comes from the channel, so only a command that loaded it can raise one
            # (`splitrec --help` and a typo in an option never load pyarrow)
            base = sys.modules.get("splitrec_core.channel.contract")
            if base is None or not isinstance(error, base.PeerError):
                raise
            _exit(error, code=1)


def _exit(error: Exception, code: int) -> NoReturn:
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=code) from None
