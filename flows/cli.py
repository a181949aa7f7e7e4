"""The `splitrec` command line: fetch data, run the pipeline, serve it on a schedule."""

from __future__ import annotations

import json
import logging
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from splitrec_core.errors import InputError

if TYPE_CHECKING:
    from splitrec_core.federation import PartyFiles, PartyView
    from splitrec_core.registry import Aliases, Registry, SharedModel

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
party_app = typer.Typer(help="Parties apart: each runs its own part on its own host, over Arrow "
                             "Flight with mutual TLS.", no_args_is_help=True)
app.add_typer(party_app, name="party")
models_app = typer.Typer(help="The model registry: every party's versions, and which one is "
                              "current.", no_args_is_help=True)
app.add_typer(models_app, name="models")

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
def data_synthetic(workdir: Path = Path("runs/synthetic"), rows: int = 20_000, seed: int = 0,
                   parquet: Annotated[bool, typer.Option(
                       help="Parquet with a row group per million people (for data/synthetic-dask.toml)")] = False,
                   ) -> None:
    """Write a synthetic three-party dataset under WORKDIR/data, a million people at a time."""
    from splitrec_core.datasets.synthetic import write_parties

    if rows <= 0:
        raise typer.BadParameter("must be at least 1", param_hint="--rows")
    suffix = ".parquet" if parquet else ".csv"
    for party, path in write_parties(workdir / "data", rows, seed, suffix=suffix).items():
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
        from flows.score import score_pipeline
        from flows.sweep import sweep

        _quiet_prefect_input_errors()
        flow = {"train_pipeline": train_pipeline, "sweep": sweep, "score": score_pipeline}[name]
        return Path(flow(str(config), str(root), **parameters))
    except InputError as error:
        _fail(error)


def _print_summary(report: Path) -> None:
    """The run's closing lines: per task metrics, traffic, the registry's verdict, where things are."""
    from splitrec_core.evaluate import Report
    from splitrec_core.report import terminal_summary

    typer.echo(terminal_summary(Report.load(report), report, report.parent.parent / "export"))


@app.command()
def run(config: Path, workdir: Workdir = None,
        centralized: Annotated[bool, typer.Option(help="Also train on all columns pooled.")] = False,
        ) -> None:
    """Run the whole pipeline locally (all parties in this process) and print the metrics."""
    report = _run_flow("train_pipeline", config, workdir, centralized=centralized)
    _print_summary(report)


@app.command()
def score(config: Path,
          inputs: Annotated[list[str], typer.Option(
              "--input", help="PARTY=FILE: a party's new rows (give one per party).")],
          model: Annotated[str, typer.Option(help="current, candidate or a version ID.")] = "current",
          workdir: Workdir = None) -> None:
    """Score new rows with a registered version: PSI aligns them, each party embeds its own rows,
    the label party's top writes per-task probabilities beside its IDs."""
    files = dict(item.split("=", 1) for item in inputs if "=" in item)
    if len(files) != len(inputs):
        _fail(InputError("--input", None, f"expected PARTY=FILE, got {inputs}"))
    out = _run_flow("score", config, workdir, inputs=files, model=model)
    typer.echo(f"predictions: {out}")


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


PartyName = Annotated[str, typer.Option(help="Which party of the federation we are.")]
PrivateFile = Annotated[Path | None, typer.Option(
    help="Our private party file (default: party.toml beside FEDERATION).")]


def _party_setup(federation: Path, party: str, private: Path | None,
                 workdir: Path | None) -> tuple[PartyView, PartyFiles]:
    """Read our files before Prefect starts (a bad one fails in a second) and keep our cached
    results in our run folder; our view and files."""
    from splitrec_core.federation import PartyFiles

    files = PartyFiles(federation=federation, party=party, private=private, workdir=workdir)
    view = files.load()
    _use_workdir_results(files.workdir)
    return view, files


RunId = Annotated[str | None, typer.Option(
    help="The run's ID, new for every run; every party of the run passes the same one (with "
         "--invite the label party makes one).")]
Invite = Annotated[bool, typer.Option(
    help="Label party: first start the run at every serving feature party.")]


def _needs_run_id(run_id: str | None, invite: bool) -> None:
    if run_id is None and not invite:
        raise typer.BadParameter("every party of a run passes the same new --run-id (or the "
                                 "label party starts it with --invite)")


@party_app.command("run")
def party_run(federation: Path, party: PartyName, private: PrivateFile = None,
              run_id: RunId = None, invite: Invite = False, workdir: Workdir = None) -> None:
    """Run our part of the pipeline; the other parties run theirs on their own hosts."""
    _needs_run_id(run_id, invite)
    try:
        view, files = _party_setup(federation, party, private, workdir)
        from flows.party import party_flows

        _quiet_prefect_input_errors()
        pipeline, _ = party_flows(view.config.party(party).engine)
        report = pipeline(files, run_id=run_id, invite=invite)
    except InputError as error:
        _fail(error)
    if report:
        _print_summary(Path(report))
    else:
        typer.echo(f"{party}: done; the label party holds the report")


@party_app.command("score")
def party_score(federation: Path, party: PartyName,
                rows: Annotated[Path | None, typer.Option(
                    "--input", help="Our new rows, CSV or Parquet (default: score_input in our "
                                    "party.toml).")] = None,
                run_id: RunId = None, invite: Invite = False,
                model: Annotated[str, typer.Option(
                    help="At the label party: current, candidate or a version ID.")] = "current",
                private: PrivateFile = None, workdir: Workdir = None) -> None:
    """Score our new rows with the version the label party names; the predictions stay at the
    label party."""
    _needs_run_id(run_id, invite)
    try:
        view, files = _party_setup(federation, party, private, workdir)
        from flows.party import party_flows

        _quiet_prefect_input_errors()
        _, score_flow = party_flows(view.config.party(party).engine)
        predictions = score_flow(files, rows=str(rows.resolve()) if rows else None,
                                 run_id=run_id, model=model, invite=invite)
    except InputError as error:
        _fail(error)
    typer.echo(f"predictions: {predictions}" if predictions else
               f"{party}: done; the label party holds the predictions")


@party_app.command("serve")
def party_serve(federation: Path, party: PartyName, private: PrivateFile = None,
                workdir: Workdir = None) -> None:
    """Serve our part: the label party as a deployment on the federation's schedule (and from its
    UI), which starts each run at the feature parties; a feature party keeps its endpoint up and
    runs its part whenever the label party starts a run. Ctrl-C stops."""
    try:
        view, files = _party_setup(federation, party, private, workdir)
        from deployments.serve import serve_feature_party, serve_label_party

        serve = serve_label_party if party == view.federation.label_party else serve_feature_party
        serve(view, files.model_copy(update={"federation": federation.resolve()}))
    except InputError as error:
        _fail(error)


@party_app.command("trial")
def party_trial(config: Path, data_workdir: Annotated[Path, typer.Option(
                    help="Where the config's data files are (as for `splitrec run`).")],
                out: Annotated[Path, typer.Option(help="One folder per party goes here.")],
                base_port: int = 50051) -> None:
    """Split a one-process CONFIG into a trial federation on 127.0.0.1: per party a folder with
    its federation.toml copy, its private party.toml, its data file and its credentials."""
    try:
        from splitrec_core.config import load_config
        from splitrec_core.federation import write_trial_federation

        cfg = load_config(config)
        files = {p.name: cfg.party_file(p, data_workdir) for p in cfg.parties}
        for party, (shared, private) in write_trial_federation(cfg, files, out, base_port).items():
            typer.echo(f"{party}: {shared} {private}")
    except InputError as error:
        _fail(error)


@app.command()
def certs(federation: Path, out: Annotated[Path, typer.Option(
              help="Each party's credentials go to OUT/<party>/.")] = Path("credentials")) -> None:
    """Make a trial CA and, per party of FEDERATION, a certificate, key and token; print the
    token hashes for the federation file (a real federation brings its own CA)."""
    from splitrec_core.certs import make_trial_credentials
    from splitrec_core.config import read_toml, validated
    from splitrec_core.federation import Federation

    try:  # the token hashes may be missing still: this command makes them
        shared = validated(Federation, read_toml(federation), federation)
    except InputError as error:
        _fail(error)
    for party, files in make_trial_credentials(shared.certificate_hosts(), out).items():
        typer.echo(f'{party}: {files.cert.parent}  token_sha256 = "{files.token_sha256()}"')


def _registry(config: Path, workdir: Path | None) -> SharedModel:
    from splitrec_core.config import load_config
    from splitrec_core.registry import SharedModel

    cfg = load_config(config)
    return SharedModel.of(cfg, workdir or Path("runs") / cfg.name)


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
    try:
        _print_versions(next(iter(_registry(config, workdir).registries.values())))
    except InputError as error:
        _fail(error)


@models_app.command("show")
def models_show(config: Path, version: Annotated[str, typer.Argument()] = "current",
                workdir: Workdir = None,
                party: Annotated[str | None, typer.Option(help="Whose manifest (default: the "
                                                               "label party's).")] = None) -> None:
    """A version's manifest (VERSION may be an alias: current, candidate)."""
    try:
        model = _registry(config, workdir)
        _print_manifest(model.registries[party] if party else
                        next(iter(model.registries.values())), version)
    except InputError as error:
        _fail(error)


@models_app.command("promote")
def models_promote(config: Path, version: str, workdir: Workdir = None) -> None:
    """Make VERSION (or the candidate) current at every party, or at none."""
    try:
        _print_aliases(_registry(config, workdir).promote(version))
    except InputError as error:
        _fail(error)


@models_app.command("rollback")
def models_rollback(config: Path, workdir: Workdir = None) -> None:
    """Return every party to the champion before the current one."""
    try:
        _print_aliases(_registry(config, workdir).rollback())
    except InputError as error:
        _fail(error)


party_models_app = typer.Typer(help="Our part of the model registry with parties apart; the label "
                                    "party moves every party's aliases.", no_args_is_help=True)
party_app.add_typer(party_models_app, name="models")


def _own_registry(federation: Path, party: str, private: Path | None,
                  workdir: Path | None) -> tuple[PartyView, Registry, Path]:
    from splitrec_core.apart.registry_protocol import own_registry
    from splitrec_core.workspace import Workspace

    view, files = _party_setup(federation, party, private, workdir)
    return view, own_registry(view, Workspace(files.workdir)), files.workdir


@party_models_app.command("list")
def party_models_list(federation: Path, party: PartyName, private: PrivateFile = None,
                      workdir: Workdir = None) -> None:
    """Every version in our registry, oldest first, with its test AUCs and our aliases."""
    try:
        _print_versions(_own_registry(federation, party, private, workdir)[1])
    except InputError as error:
        _fail(error)


@party_models_app.command("show")
def party_models_show(federation: Path, party: PartyName,
                      version: Annotated[str, typer.Argument()] = "current",
                      private: PrivateFile = None, workdir: Workdir = None) -> None:
    """Our manifest of a version (VERSION may be an alias: current, candidate)."""
    try:
        _print_manifest(_own_registry(federation, party, private, workdir)[1], version)
    except InputError as error:
        _fail(error)


def _move_apart(federation: Path, party: str, private: Path | None, workdir: Path | None,
                run_id: str | None, invite: bool,
                change: Callable[[Aliases], Aliases] | None) -> None:
    """Our side of a move of every party's aliases; with `invite`, the label party first starts
    it at every serving feature party."""
    _needs_run_id(run_id, invite)
    from splitrec_core.channel import PeerError

    try:
        from splitrec_core.apart.registry_protocol import move_apart
        from splitrec_core.workspace import Workspace

        view, _, root = _own_registry(federation, party, private, workdir)
        label = view.federation.label_party
        if (change is None) == (party == label):
            raise InputError(federation, None, f"the label party {label} promotes and rolls "
                                               "back; a feature party follows")
        run_id = run_id or f"move-{uuid.uuid4().hex[:8]}"
        _print_aliases(move_apart(view, run_id, change, Workspace(root), invite))
    except InputError as error:
        _fail(error)
    except PeerError as error:  # a party did not answer or refused (the next move redoes this one)
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None


@party_models_app.command("promote")
def party_models_promote(federation: Path, party: PartyName, version: str,
                         run_id: RunId = None, invite: Invite = False,
                         private: PrivateFile = None, workdir: Workdir = None) -> None:
    """Label party: make VERSION (or the candidate) current at every party, or at none."""
    from splitrec_core.apart.registry_protocol import promote

    _move_apart(federation, party, private, workdir, run_id, invite, promote(version))


@party_models_app.command("rollback")
def party_models_rollback(federation: Path, party: PartyName, run_id: RunId = None,
                          invite: Invite = False, private: PrivateFile = None,
                          workdir: Workdir = None) -> None:
    """Label party: return every party to the champion before the current one."""
    from splitrec_core.registry import Aliases

    _move_apart(federation, party, private, workdir, run_id, invite, Aliases.rolled_back)


@party_models_app.command("follow")
def party_models_follow(federation: Path, party: PartyName,
                        run_id: Annotated[str, typer.Option(
                            help="The move's ID, as the label party passed it.")],
                        private: PrivateFile = None, workdir: Workdir = None) -> None:
    """Feature party not serving: take part in the label party's promote or rollback."""
    _move_apart(federation, party, private, workdir, run_id, False, None)


def main() -> None:
    """Entry point for `python -m flows.cli`."""
    app(prog_name="splitrec")


if __name__ == "__main__":
    sys.exit(main())
