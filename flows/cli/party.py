"""`splitrec party run|score|serve|trial` and `splitrec certs`: each party on its own host."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from flows.cli.bootstrap import (
    quiet_expected_errors,
    start_temporary_api,
    stop_on_sigterm,
    use_workdir_results,
)
from flows.cli.options import Invite, RunId, needs_run_id, with_party_files
from flows.cli.summary import print_summary

if TYPE_CHECKING:
    from splitrec_core.federation import PartyFiles, PartyView

party_app = typer.Typer(help="Parties apart: each runs its own part on its own host, over Arrow "
                             "Flight with mutual TLS.", no_args_is_help=True)
commands = typer.Typer()


def _prepared(files: PartyFiles) -> PartyView:
    """Our view, read before Prefect starts (a bad file fails in a second).

    Our cached results are kept in our run folder; SIGTERM stops us as Ctrl-C does.
    """
    view = files.load()
    use_workdir_results(files.workdir)
    stop_on_sigterm()
    return view


@party_app.command("run")
@with_party_files
def party_run(files: PartyFiles, run_id: RunId = None, invite: Invite = False) -> None:
    """Run our part of the pipeline; the other parties run theirs on their own hosts."""
    needs_run_id(run_id, invite)
    view = _prepared(files)
    api_started = start_temporary_api()
    from flows.party import party_flows

    quiet_expected_errors()
    pipeline, _ = party_flows(view.config.party(files.party).engine)
    api_started()
    report = pipeline(files, run_id=run_id, invite=invite)
    if report:
        print_summary(Path(report))
    else:
        typer.echo(f"{files.party}: done; the label party holds the report")


@party_app.command("score")
@with_party_files
def party_score(files: PartyFiles,
                rows: Annotated[Path | None, typer.Option(
                    "--input", help="Our new rows, CSV or Parquet (default: score_input in our "
                                    "party.toml).")] = None,
                run_id: RunId = None, invite: Invite = False,
                model: Annotated[str, typer.Option(
                    help="At the label party: current, candidate or a version ID.")] = "current",
                ) -> None:
    """Score our new rows with the version the label party names.

    The predictions stay at the label party.
    """
    needs_run_id(run_id, invite)
    view = _prepared(files)
    api_started = start_temporary_api()
    from flows.party import party_flows

    quiet_expected_errors()
    _, score_flow = party_flows(view.config.party(files.party).engine)
    api_started()
    predictions = score_flow(files, rows=str(rows.resolve()) if rows else None, run_id=run_id,
                             model=model, invite=invite)
    typer.echo(f"predictions: {predictions}" if predictions else
               f"{files.party}: done; the label party holds the predictions")


@party_app.command("serve")
@with_party_files
def party_serve(files: PartyFiles) -> None:
    """Serve our part: the label party its deployments, a feature party its endpoint.

    The label party serves as a deployment on the federation's schedule (and from its UI),
    which starts each run at the feature parties; a feature party keeps its endpoint up and
    runs its part whenever the label party starts a run. Ctrl-C stops.
    """
    view = _prepared(files)
    from deployments.serve import serve_feature_party, serve_label_party

    label = files.party == view.federation.label_party
    serve = serve_label_party if label else serve_feature_party
    # The runs it serves start later, maybe from another folder: every path absolute
    serve(view, files.model_copy(update={"federation": files.federation.resolve()}))


@party_app.command("trial")
def party_trial(config: Path, data_workdir: Annotated[Path, typer.Option(
                    help="Where the config's data files are (as for `splitrec run`).")],
                out: Annotated[Path, typer.Option(help="One folder per party goes here.")],
                base_port: Annotated[int, typer.Option(
                    help="The label party's port; the others' follow. Keep it below 32768, where "
                         "Linux picks outgoing ports: a party dialing its own host's port in that "
                         "range before the peer listens can connect to itself.")] = 20051,
                ) -> None:
    """Split a one-process CONFIG into a trial federation on 127.0.0.1.

    Per party a folder with its federation.toml copy, its private party.toml, its data file and
    its credentials.
    """
    from splitrec_core.config import load_config
    from splitrec_core.federation import write_trial_federation

    cfg = load_config(config)
    files = {p.name: cfg.party_file(p, data_workdir) for p in cfg.parties}
    for party, (shared, private) in write_trial_federation(cfg, files, out, base_port).items():
        typer.echo(f"{party}: {shared} {private}")


@commands.command()
def certs(federation: Path, out: Annotated[Path, typer.Option(
              help="Each party's credentials go to OUT/<party>/.")] = Path("credentials")) -> None:
    """Make a trial CA and, per party of FEDERATION, a certificate, key and token.

    Print the token hashes for the federation file (a real federation brings its own CA).
    """
    from splitrec_core.certs import make_trial_credentials
    from splitrec_core.config import read_toml, validated
    from splitrec_core.federation import Federation

    # Not `load_party`: the token hashes may be missing still, this command makes them
    shared = validated(Federation, read_toml(federation), federation)
    for party, files in make_trial_credentials(shared.certificate_hosts(), out).items():
        typer.echo(f'{party}: {files.cert.parent}  token_sha256 = "{files.token_sha256()}"')
