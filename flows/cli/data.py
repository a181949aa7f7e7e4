"""`splitrec data …`: example data for the parties."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

data_app = typer.Typer(help="Prepare example data for the parties.", no_args_is_help=True)


@data_app.command("census")
def data_census(workdir: Path = Path("runs/census")) -> None:
    """Fetch KDD census-income and split it into three parties under WORKDIR/data."""
    from splitrec_core.datasets.census import prepare_census

    for party, path in prepare_census(workdir / "data").items():
        typer.echo(f"{party}: {path}")


@data_app.command("synthetic")
def data_synthetic(workdir: Path = Path("runs/synthetic"), rows: int = 20_000, seed: int = 0,
                   parquet: Annotated[bool, typer.Option(
                       help="Parquet with a row group per million people (for "
                            "data/synthetic-dask.toml)")] = False,
                   ) -> None:
    """Write a synthetic three-party dataset under WORKDIR/data, a million people at a time."""
    from splitrec_core.datasets.synthetic import write_parties

    if rows <= 0:
        raise typer.BadParameter("must be at least 1", param_hint="--rows")
    suffix = ".parquet" if parquet else ".csv"
    for party, path in write_parties(workdir / "data", rows, seed, suffix=suffix).items():
        typer.echo(f"{party}: {path}")


@data_app.command("events")
def data_events(workdir: Path = Path("runs/events"), events: int = 1_000_000,
                users: int = 100_000, seed: int = 0) -> None:
    """Write a shop's events and two partners' people under WORKDIR/data (data/events.toml).

    The shop holds EVENTS impressions (click, conversion) of USERS people; the media partner and
    the bank one row per person. Ground truth and sizes: splitrec_core/datasets/events.py.
    """
    from splitrec_core.datasets.events import write_events

    if users <= 0 or events < users:
        raise typer.BadParameter("needs at least one person, and one event per person",
                                 param_hint="--users/--events")
    for party, path in write_events(workdir / "data", events, users, seed).items():
        typer.echo(f"{party}: {path}")
