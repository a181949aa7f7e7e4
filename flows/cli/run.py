"""`splitrec run`, `score`, `sweep`, `serve`: every party in this process, from one config."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.bootstrap import (
    quiet_expected_errors,
    start_temporary_api,
    use_workdir_results,
)
from flows.cli.options import Workdir
from flows.cli.summary import print_summary
from splitrec_core.errors import InputError

commands = typer.Typer()


def _checked_workdir(config: Path, workdir: Path | None, sweeping: bool = False) -> Path:
    """Check the config (and with `sweeping`, its sweep grid) before Prefect starts.

    So a bad config fails in a second. Returns the run folder (default `runs/<config name>`).
    """
    from splitrec_core.config import load_config

    cfg = load_config(config)
    if sweeping:
        cfg.variants(config)
    return cfg.run_folder(workdir)


def _run_flow(name: str, config: Path, workdir: Path | None, **parameters: object) -> Path:
    """Run a flow locally, its cached results kept in the run folder.

    Only the flow asked for is imported: scoring's loads TensorFlow, which a fully cached
    training run never needs (about 3 s).
    """
    root = _checked_workdir(config, workdir, sweeping=name == "sweep")
    use_workdir_results(root)
    api_started = start_temporary_api()
    module, function = {"train_pipeline": ("flows.pipeline", "train_pipeline"),
                        "sweep": ("flows.sweep", "sweep"),
                        "score": ("flows.score", "score_pipeline")}[name]
    flow = getattr(importlib.import_module(module), function)
    quiet_expected_errors()
    api_started()
    return Path(flow(str(config), str(root), **parameters))


@commands.command()
def run(config: Path, workdir: Workdir = None,
        centralized: Annotated[bool, typer.Option(
            help="Also train on all columns pooled.")] = False) -> None:
    """Run the whole pipeline locally (all parties in this process) and print the metrics."""
    print_summary(_run_flow("train_pipeline", config, workdir, centralized=centralized))


@commands.command()
def score(config: Path,
          inputs: Annotated[list[str], typer.Option(
              "--input", help="PARTY=FILE: a party's new rows (give one per party).")],
          model: Annotated[str, typer.Option(
              help="current, candidate or a version ID.")] = "current",
          workdir: Workdir = None) -> None:
    """Score new rows with a registered version.

    PSI aligns them, each party embeds its own rows, the label party's top writes per-task
    probabilities beside its IDs.
    """
    files = dict(item.split("=", 1) for item in inputs if "=" in item)
    if len(files) != len(inputs):
        raise InputError("--input", None, f"expected PARTY=FILE, got {inputs}")
    out = _run_flow("score", config, workdir, inputs=files, model=model)
    typer.echo(f"predictions: {out}")


@commands.command()
def sweep(config: Path, workdir: Workdir = None) -> None:
    """Train the split MMoE over the config's sweep grid and print the comparison table."""
    typer.echo(_run_flow("sweep", config, workdir).read_text())


@commands.command()
def serve(config: Annotated[Path, typer.Argument()] = Path("data/census.toml"),
          workdir: Workdir = None,
          name: str = "retrain") -> None:
    """Serve the pipeline as a deployment on the config's cron schedule (trigger it from the UI)."""
    root = _checked_workdir(config, workdir)
    use_workdir_results(root)
    from deployments.serve import serve_pipeline

    serve_pipeline(config, root, name)
