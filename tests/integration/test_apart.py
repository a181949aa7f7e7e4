"""Parties apart: each party has only its own folder and talks to the others over Flight.

Its folder holds its data, its private file, its copy of the federation file and its
credentials; the parties talk over Flight with mutual TLS.

The split computation is the same as in one process (same predictions), nothing raw crosses,
and a feature party killed mid-training is restarted and resumes from the epoch every party
checkpointed, agreed over the channel.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from splitrec_core.channel import PeerError
from splitrec_core.channel.flight.addresses import free_port_block
from splitrec_core.datasets.synthetic import write_parties
from splitrec_core.evaluate import evaluate
from splitrec_core.federation import PartyView, load_party, write_trial_federation
from tests.conftest import (
    REPO,
    as_new_rows,
    found_in,
    prepare_features,
    raw_values,
)

EPOCHS = 12
# How long a wait for another party may take before the test fails: a hang guard, not a speed
# limit (each wait ends as soon as what it waits for is there)
HANG_GUARD_S = 600
RUN_PARTY = """
import json, sys
from pathlib import Path
from splitrec_core.federation import load_party
from tests.integration.test_apart import run_party
args = json.loads(sys.argv[1])
view = load_party(Path("federation.toml"), Path("party.toml"), args["party"])
result = run_party(view, args["run_id"], Path("run").resolve(), retries=2)
if result is not None:
    print(json.dumps({"resumed_after_epoch": result.resumed_after_epoch,
                      "epochs_run": result.epochs_run, "predictions": str(result.predictions)}))
"""


def run_party(view: PartyView, run_id: str, workdir: Path, retries: int = 0):
    """One party's stages with the core library, as `party_pipeline` runs them as tasks.

    The stages before training are kept once done (as the flow's cache keeps them within a run),
    and training is retried `retries` times after a peer is lost (as its task is).
    """
    from splitrec_core.apart.psi import align_apart
    from splitrec_core.apart.training import train_apart
    from splitrec_core.features import PartyFeatures, build_features
    from splitrec_core.validate import validate_party
    from splitrec_core.workspace import Workspace

    cfg, space = view.config, Workspace(workdir)
    me = cfg.party(view.me)
    folder = space.features(view.me)
    features = PartyFeatures(*(folder / f for f in ("train.parquet", "test.parquet",
                                                    "transform.json")))
    if not all(path.exists() for path in features.paths):
        validated = validate_party(me, view.data_file, space.validated(view.me),
                                   cfg.tasks if view.me == cfg.label_party else None,
                                   cfg.psi.normalize)
        alignment = align_apart(view, run_id, validated, space)
        features = build_features(me, validated.table, alignment.files[view.me], folder)
    for attempt in range(retries + 1):
        try:
            return train_apart(view, run_id, features, space)[1]
        except PeerError as error:
            if attempt == retries:
                raise
            print(f"training attempt {attempt + 1} failed, retrying: {error}", file=sys.stderr)
            time.sleep(1)
    return None


@pytest.fixture
def federation(tmp_path: Path, synthetic_cfg):
    """Synthetic parties split into a trial federation on 127.0.0.1: one folder each."""
    write_parties(tmp_path / "data", 3000, seed=4)
    files = {p.name: synthetic_cfg.party_file(p, tmp_path) for p in synthetic_cfg.parties}
    cfg = synthetic_cfg.model_copy(update={"training": synthetic_cfg.training.model_copy(
        update={"epochs": EPOCHS})})
    written = write_trial_federation(cfg, files, tmp_path / "federation",
                                     free_port_block(3))
    return cfg, tmp_path, written


def test_each_party_holds_only_its_own_files(federation):
    cfg, _, written = federation
    for party in cfg.parties:
        folder = written[party.name][0].parent
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        assert files == ["credentials/ca.pem", "credentials/cert.pem", "credentials/key.pem",
                         "credentials/token", f"data/{party.name}.csv", "federation.toml",
                         "party.toml"]
        text = "\n".join(p.read_text() for p in folder.glob("*.toml"))
        for other in cfg.parties:
            if other.name != party.name:  # no other party's columns or file (TOML strings)
                assert not [c for c in (*other.feature_columns, other.file) if f'"{c}"' in text]
        view = load_party(folder / "federation.toml", folder / "party.toml", party.name)
        assert view.config.party(party.name).feature_columns == party.feature_columns
        assert all(p.is_peer for p in view.config.parties if p.name != party.name)


def test_parties_apart_compute_what_one_process_computes_and_send_nothing_raw(federation):
    # Prepare: each party's view from its own folder; its endpoint keeps every message it sends;
    # the feature parties serve, so the label party starts the run
    import pandas as pd

    from splitrec_core.apart.jobs import Job
    from splitrec_core.apart.registry_protocol import move_apart, promote
    from splitrec_core.apart.scoring import score_apart
    from splitrec_core.apart.serving import accept_runs, invite
    from splitrec_core.apart.sessions import endpoint
    from splitrec_core.errors import InputError
    from splitrec_core.export import export_party
    from splitrec_core.registry import Aliases, Registry
    from splitrec_core.scoring import trained_predictions
    from splitrec_core.training.local import train_split_local
    from splitrec_core.workspace import Workspace

    cfg, run, written = federation
    views = {p: load_party(shared, private, p) for p, (shared, private) in written.items()}
    for view in views.values():
        endpoint(view).recorded = []
    results: dict[str, object] = {}
    scored: dict[str, object] = {}

    def folder_of(name: str) -> Path:
        return written[name][0].parent

    def run_here(name: str, run_id: str) -> None:
        results[name] = (run_id, run_party(views[name], run_id, folder_of(name) / "run"))

    for party in cfg.feature_parties:
        accept_runs(views[party.name], {
            Job.TRAIN: lambda run_id, name=party.name: run_here(name, run_id),
            Job.SCORE: lambda run_id, name=party.name: scored.update(
                {name: score_here(name, run_id)}),
            Job.MODELS: lambda run_id, name=party.name: move_apart(
                views[name], run_id, None, Workspace(folder_of(name) / "run")),
        })

    # Execute: the label party starts run apart-1 at the serving parties and runs its own part
    answers = invite(views[cfg.label_party], "apart-1")
    run_here(cfg.label_party, "apart-1")
    deadline = time.monotonic() + HANG_GUARD_S
    while len(results) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    with pytest.raises(PeerError, match="only the label party advertiser starts runs"):
        endpoint(views["bank"]).start_run("media", "apart-2")
    with pytest.raises(PeerError, match="bank does not serve sweep runs"):
        endpoint(views[cfg.label_party]).start_run("bank", "apart-2", "sweep")
    features = prepare_features(cfg, run)
    together = train_split_local(cfg, features, {p: Workspace(run).trained(p) for p in features})

    # Assert: each serving party ran the run it was asked to, once
    assert answers == {"bank": "bank: started run apart-1", "media": "media: started run apart-1"}
    again = invite(views[cfg.label_party], "apart-1")
    assert again["bank"] == "bank: run apart-1 was started already"
    assert [results[p.name] for p in cfg.feature_parties] == [("apart-1", None)] * 2
    # the label party's predictions are the one-process run's
    apart = results[cfg.label_party][1]
    a = pq.read_table(apart.predictions).to_pandas()
    b = pq.read_table(together.predictions).to_pandas()
    assert a["position"].tolist() == b["position"].tolist()
    np.testing.assert_allclose(a.drop(columns="position"), b.drop(columns="position"), atol=1e-5)
    # the label party, through which every message passes, counted all of them
    assert apart.channel == together.channel

    # Execute: every party registers its part as version v1 and scores new rows apart (the label
    # party's test rows without split and labels, the feature parties' whole files); the label
    # party starts the scoring run at the serving feature parties
    registries = {}
    for name, view in views.items():
        folder, space = folder_of(name), Workspace(folder_of(name) / "run")
        top = space.trained(name) / "top.keras" if name == cfg.label_party else None
        export = export_party(view.config, name, space.trained(name) / "bottom.keras",
                              space.features(name) / "transform.json", folder / "export", top)
        registries[name] = Registry(name, space.registry(name, cfg.name))
        for version in ("v1", "v2"):
            registries[name].register(version, export, {"registered_at": f"2026-11-27 {version}"})
        registries[name].write_aliases(Aliases(current="v1"))
        rows = as_new_rows(pd.read_csv(folder / "data" / f"{name}.csv", dtype=str),
                           name == cfg.label_party)
        rows.to_csv(folder / "new.csv", index=False)

    def score_here(name: str, run_id: str):
        return score_apart(views[name], run_id, "current", folder_of(name) / "new.csv",
                           Workspace(folder_of(name) / "run"))

    invite(views[cfg.label_party], "score-1", Job.SCORE)
    scored[cfg.label_party] = score_here(cfg.label_party, "score-1")
    deadline = time.monotonic() + HANG_GUARD_S
    while len(scored) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)

    # Assert: predictions at the label party alone, the test predictions of the run again
    assert [scored[p.name] for p in cfg.feature_parties] == [None, None]
    label_run = written[cfg.label_party][0].parent / "run"
    expected = trained_predictions(label_run, cfg.label_party, "user_id")
    again = pd.read_parquet(scored[cfg.label_party].predictions).set_index("user_id")
    assert len(again) == len(expected)
    assert (again.loc[expected.index] - expected).abs().to_numpy().max() < 1e-5

    # Execute: the label party promotes v2 at every party, then rolls back; then it tries to
    # promote a v3 that only it holds
    def move(run_id: str, change) -> Aliases:
        return move_apart(views[cfg.label_party], run_id, change,
                          Workspace(folder_of(cfg.label_party) / "run"), invite_parties=True)

    def every_partys_aliases() -> list[Aliases]:  # a follower confirms after it moved
        return [r.aliases() for r in registries.values()]

    promoted = move("move-1", promote("v2"))
    after_promotion = every_partys_aliases()
    rolled_back = move("move-2", Aliases.rolled_back)
    after_rollback = every_partys_aliases()
    registries[cfg.label_party].register("v3", folder_of(cfg.label_party) / "export",
                                         {"registered_at": "2026-11-27 v3"})
    with pytest.raises(InputError, match="nothing moved: bank, media lack version v3"):
        move("move-3", promote("v3"))

    # Assert: every party moved together each time, and not at all when one lacked the version
    assert promoted == Aliases(current="v2", previous=["v1"])
    assert after_promotion == [promoted] * 3
    assert rolled_back == Aliases(current="v1")
    assert after_rollback == [rolled_back] * 3 == every_partys_aliases()

    # every message of every stage was captured where it was sent: no raw ID or feature value
    # (outside the messages go only the hellos and actions: session, federation hash, run ID)
    sent = [message for view in views.values() for *_, message in endpoint(view).recorded]
    payload = b"".join(sent)
    assert len(sent) > 100 and len(payload) > 100_000
    needles = raw_values(run / "data")
    assert len(needles) > 1500
    assert found_in(payload, needles) == []


def start_party(folder: Path, party: str, run_id: str) -> subprocess.Popen:
    """`party`'s stages (`run_party`, training retried twice) in a process of its own."""
    env = os.environ | {"PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", RUN_PARTY, json.dumps(
        {"party": party, "run_id": run_id})], cwd=folder, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def checkpoints(folder: Path, party: str) -> list[int]:
    """The epochs `party` has checkpointed in its run folder so far."""
    trained = folder / "run" / "parties" / party / "trained"
    return sorted(int(p.stem.split("-")[1]) for p in trained.glob("checkpoints/*/epoch-*.npz"))


def test_a_killed_feature_party_restarts_and_the_run_resumes_from_the_common_epoch(federation):
    # Prepare
    from splitrec_core.training.local import train_split_local
    from splitrec_core.workspace import Workspace

    cfg, run, written = federation
    folders = {p: shared.parent for p, (shared, _) in written.items()}
    features = prepare_features(cfg, run)
    unbroken = train_split_local(cfg, features, {p: Workspace(run).trained(p) for p in features})

    # Execute: a process per party; SIGKILL the bank once it has finished epoch 2, start it again
    running = {p: start_party(folder, p, "killed-1") for p, folder in folders.items()}
    deadline = time.monotonic() + HANG_GUARD_S
    while (len(checkpoints(folders["bank"], "bank")) < 2
           or checkpoints(folders["bank"], "bank")[-1] < 2):
        assert running["bank"].poll() is None, running["bank"].communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the bank never reached epoch 2"
        time.sleep(0.01)
    running["bank"].send_signal(signal.SIGKILL)
    running["bank"].wait()
    running["bank"] = start_party(folders["bank"], "bank", "killed-1")
    outputs = {p: process.communicate(timeout=HANG_GUARD_S) for p, process in running.items()}

    # Assert: the others lost the bank, said so, retried and waited for it, and the run completed
    assert all(process.returncode == 0 for process in running.values()), outputs
    for party, lost in (("advertiser", "bank"), ("media", "advertiser")):
        retried = [line for line in outputs[party][1].splitlines() if "attempt 1 failed" in line]
        assert len(retried) == 1 and lost in retried[0], outputs[party][1][-2000:]
    resumed = json.loads(outputs["advertiser"][0].strip().splitlines()[-1])
    assert resumed["resumed_after_epoch"] >= 2
    assert resumed["epochs_run"] == unbroken.epochs_run
    tasks = cfg.task_names
    label_features = folders["advertiser"] / "run" / "parties" / "advertiser" / "features"
    label_test = label_features / "test.parquet"
    broken_metrics = evaluate(Path(resumed["predictions"]), label_test, tasks)
    whole_metrics = evaluate(unbroken.predictions, features[cfg.label_party].test, tasks)
    for task in tasks:
        assert abs(broken_metrics[task]["auc"] - whole_metrics[task]["auc"]) < 0.005
    assert all(checkpoints(folder, p) == [] for p, folder in folders.items())


def test_a_failed_party_flow_names_the_step_and_the_party(federation, prefect_api):
    # Prepare: a duplicate ID in the bank's data file
    import pandas as pd
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    from flows.party import party_pipeline
    from splitrec_core.errors import InputError
    from splitrec_core.federation import PartyFiles

    _, _, written = federation
    shared, _ = written["bank"]
    bank_data = shared.parent / "data" / "bank.csv"
    rows = pd.read_csv(bank_data)
    rows.loc[4, "user_id"] = rows.loc[1, "user_id"]
    rows.to_csv(bank_data, index=False)

    # Execute: the bank's own flow, as `splitrec party run` starts it, from its files
    state = party_pipeline(PartyFiles(federation=shared, party="bank"), run_id="duplicate-1",
                           return_state=True)

    # Assert: the failure hook read the run's files and named the step and the party
    APILogHandler().flush()  # logs reach the API in batches: send what is queued
    with pytest.raises(InputError,
                       match=r"bank\.csv, column 'user_id': party 'bank': 1 duplicate ID\(s\)"):
        state.result()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(
            any_=[state.state_details.flow_run_id])))
    assert [log.message for log in logs
            if " of synthetic failed at step validate at party bank: " in log.message]


def test_disjoint_ids_stop_every_party_with_an_empty_intersection(federation):
    from concurrent.futures import ThreadPoolExecutor

    import pandas as pd

    from splitrec_core.errors import InputError

    _, _, written = federation
    bank_data = written["bank"][0].parent / "data" / "bank.csv"
    rows = pd.read_csv(bank_data)
    rows.assign(user_id="stranger-" + rows["user_id"].astype(str)).to_csv(bank_data, index=False)
    views = {p: load_party(shared, private, p) for p, (shared, private) in written.items()}

    with ThreadPoolExecutor(3) as pool:
        futures = {p: pool.submit(run_party, view, "disjoint-1", written[p][0].parent / "run")
                   for p, view in views.items()}
        for future in futures.values():  # at every party, naming its own data file
            with pytest.raises(InputError, match=r"\.csv, column 'user_id': empty intersection"):
                future.result(timeout=HANG_GUARD_S)


def test_the_distributed_demo_runs_three_organisations_each_with_its_own_prefect(tmp_path: Path):
    # `make demo-distributed` on synthetic data: `splitrec party trial`, then three
    # `splitrec party run` processes, each in its own folder with its own Prefect home and API
    write_parties(tmp_path / "data", 3000, seed=6)
    out = tmp_path / "distributed"
    demo = subprocess.run(
        [sys.executable, str(REPO / "deployments" / "distributed.py"), "--config",
         str(REPO / "data" / "synthetic.toml"), "--data-workdir", str(tmp_path), "--out",
         str(out), "--base-port", str(free_port_block(3))],
        cwd=REPO, capture_output=True, text=True, timeout=HANG_GUARD_S, check=False)

    assert demo.returncode == 0, demo.stderr[-3000:]
    report = json.loads((out / "advertiser" / "run" / "report" / "metrics.json").read_text())
    assert report["tasks"]["income_50k"]["auc"] > 0.8
    assert report["lift"]["income_50k"]["central"] is None  # no pooled data anywhere
    apis = set()
    for party in ("advertiser", "bank", "media"):
        folder = out / party
        assert sorted(p.name for p in (folder / "data").iterdir()) == [f"{party}.csv"]
        assert (folder / ".prefect-home" / "prefect.db").exists()
        assert any((folder / "run" / ".prefect").iterdir())  # its cached results, in its folder
        log = (folder / "party.log").read_text()
        assert "Flow run" in log and "Finished in state Completed()" in log
        apis |= {line.split("temporary server on ")[1] for line in log.splitlines()
                 if "temporary server on " in line}
    assert len(apis) == 3  # a Prefect API of its own each
    # every party registered its own part as the run's version, made current by the label
    # party's verdict (the first version: no champion yet); the report says so
    verdict = report["promotion"]
    assert (verdict["promote"], verdict["reasons"]) == (True, ["no champion yet"])
    for party in ("advertiser", "bank", "media"):
        models = out / party / "run" / "parties" / party / "models" / "synthetic"
        assert json.loads((models / "aliases.json").read_text())["current"] == verdict["version"]
        version = json.loads((models / verdict["version"] / "version.json").read_text())
        assert version["metrics"]["income_50k"]["auc"] == report["tasks"]["income_50k"]["auc"]
        assert (models / verdict["version"] / "manifest.json").exists()
    assert (out / "advertiser" / "run" / "report" / "report.md").exists()
    # the label party's own Prefect shows training's progress and a log line per epoch
    with sqlite3.connect(out / "advertiser" / ".prefect-home" / "prefect.db") as db:
        progress = db.execute("SELECT data FROM artifact WHERE key = 'synthetic-training'"
                              ).fetchall()
        epoch_lines = db.execute("SELECT count(*) FROM log WHERE message LIKE 'epoch %: loss %'"
                                 ).fetchone()[0]
    assert [float(data) for (data,) in progress] == [100.0]
    assert epoch_lines == report["training"]["epochs_run"]

    # each party lists its own registry; the label party cannot roll back past the first version
    def splitrec(party: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "flows.cli", "party", "models", *args,
                               str(out / party / "federation.toml"), "--party", party,
                               "--workdir", str(out / party / "run")],
                              cwd=REPO, capture_output=True, text=True, timeout=HANG_GUARD_S,
                              check=False)

    listed = splitrec("bank", "list")
    assert listed.returncode == 0, listed.stderr
    [line] = listed.stdout.splitlines()
    assert line.startswith(verdict["version"]) and line.endswith("current")
    refused = splitrec("advertiser", "rollback", "--invite")
    assert refused.returncode == 2
    assert "nothing to roll back to" in refused.stderr

    # the finished run's ID is refused before any work: its version is registered already
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    again = subprocess.run(
        [sys.executable, "-m", "flows.cli", "party", "run", str(out / "bank" / "federation.toml"),
         "--party", "bank", "--run-id", verdict["version"], "--workdir", str(out / "bank" / "run")],
        cwd=REPO, capture_output=True, text=True, timeout=HANG_GUARD_S, check=False,
        env=env | {"PREFECT_HOME": str(out / "bank" / ".prefect-home")})
    assert again.returncode == 2, again.stderr[-2000:]
    assert (f"run ID '{verdict['version']}' already ran to its end: party 'bank' holds its model "
            f"as version '{verdict['version']}'") in again.stderr
    assert "Traceback" not in again.stderr

