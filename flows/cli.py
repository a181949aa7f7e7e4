"""The `splitrec` command line: fetch data, run the pipeline, serve it on a schedule."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from splitrec_core.errors import InputError

# Quiet TensorFlow's C++ start-up chatter and keep Prefect from phoning home; give the temporary
# Prefect API time to create its database on a slow machine (Prefect's default allows 20 s, which
# a first run on a fresh machine can exceed); show splitrec's own log lines among the flow's.
# Users can override each.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "splitrec_core")

app = typer.Typer(help="Vertically federated split MMoE, orchestrated by Prefect.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Prepare example data for the parties.", no_args_is_help=True)
app.add_typer(data_app, name="data")

Workdir = Annotated[Path | None, typer.Option(help="Run folder (default: runs/<config name>).")]


def _fail(error: InputError) -> NoReturn:
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


class _QuietInputErrors(logging.Filter):
    """Drop the traceback from log records about bad input: the user needs the message only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], InputError):
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_prefect_input_errors() -> None:
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
               if name.startswith("prefect")]
    for logger in [logging.getLogger("prefect"), *loggers]:
        for handler in logger.handlers:
            handler.addFilter(_QuietInputErrors())


def _use_workdir_results(workdir: Path) -> None:
    """Keep Prefect's cached task results inside the run folder (set before Prefect is imported),
    so deleting a run folder also forgets its cache."""
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(workdir.resolve() / ".prefect"))


@data_app.command("census")
def data_census(workdir: Path = Path("runs/census")) -> None:
    """Fetch KDD census-income and split it into three parties under WORKDIR/data."""
    from splitrec_core.datasets.census import prepare_census

    for party, path in prepare_census(workdir / "data").items():
        typer.echo(f"{party}: {path}")


@data_app.command("synthetic")
def data_synthetic(workdir: Path = Path("runs/synthetic"), rows: int = 20_000, seed: int = 0) -> None:
    """Write a small synthetic three-party dataset under WORKDIR/data."""
    from splitrec_core.datasets.synthetic import make_people, write_parties

    for party, path in write_parties(make_people(rows, seed), workdir / "data").items():
        typer.echo(f"{party}: {path}")


def _checked_workdir(config: Path, workdir: Path | None, sweeping: bool = False) -> Path:
    """Check the config (and with `sweeping`, its sweep grid) before Prefect starts, so a bad
    config fails in a second; return the run folder (default `runs/<config name>`)."""
    from splitrec_core.config import load_config

    cfg = load_config(config)
    if sweeping:
        cfg.variants(config)
    return workdir or Path("runs") / cfg.name


def _run_flow(name: str, config: Path, workdir: Path | None, **parameters: object) -> Path:
    """Run a flow locally, its cached results kept in the run folder; bad input exits with 2."""
    try:
        root = _checked_workdir(config, workdir, sweeping=name == "sweep")
        _use_workdir_results(root)
        from flows.pipeline import train_pipeline
        from flows.sweep import sweep

        _quiet_prefect_input_errors()
        flow = {"train_pipeline": train_pipeline, "sweep": sweep}[name]
        return Path(flow(str(config), str(root), **parameters))
    except InputError as error:
        _fail(error)


@app.command()
def run(config: Path, workdir: Workdir = None,
        centralized: Annotated[bool, typer.Option(help="Also train on all columns pooled.")] = False,
        ) -> None:
    """Run the whole pipeline locally (all parties in this process) and print the metrics."""
    report = _run_flow("train_pipeline", config, workdir, centralized=centralized)
    typer.echo(json.dumps(json.loads(report.read_text())["tasks"], indent=2))
    typer.echo(f"report: {report}")


@app.command()
def sweep(config: Path, workdir: Workdir = None) -> None:
    """Train the split MMoE over the config's sweep grid and print the comparison table."""
    typer.echo(_run_flow("sweep", config, workdir).read_text())


@app.command()
def serve(config: Annotated[Path, typer.Argument()] = Path("data/census.toml"),
          workdir: Workdir = None,
          name: str = "retrain") -> None:
    """Serve the pipeline as a deployment on the config's cron schedule (trigger it from the UI)."""
    try:
        root = _checked_workdir(config, workdir)
        _use_workdir_results(root)
        from deployments.serve import serve_pipeline

        serve_pipeline(config, root, name)
    except InputError as error:
        _fail(error)


def main() -> None:
    """Entry point for `python -m flows.cli`."""
    app(prog_name="splitrec")


if __name__ == "__main__":
    sys.exit(main())
