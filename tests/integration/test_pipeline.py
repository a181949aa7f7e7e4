"""The Prefect flow: a full run, an all-cached rerun, a partial rerun, and the CLI's error exit.

The test entropy is pinned (tests/conftest.py): each trained figure below reproduces exactly from
run to run, and each threshold is that figure plus or minus a stated margin, wider than its spread
over seven PSI orders (other pinned values).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

from splitrec_core.config import load_config
from splitrec_core.errors import InputError
from splitrec_core.training.epochs import Plan
from tests.conftest import REPO, SYNTHETIC_TOML

PARTY_STEPS = ("validate", "features", "export")


def _run(workdir: Path, config: Path = SYNTHETIC_TOML) -> tuple[dict, dict[str, str]]:
    """Run the flow; return the report and each task run's final state name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.pipeline import train_pipeline

    state = train_pipeline(str(config), str(workdir), return_state=True)
    report = json.loads(Path(state.result()).read_text())
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    return report, {run.name: run.state.name for run in runs}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory, prefect_api):
    from splitrec_core.datasets.synthetic import write_parties

    workdir = tmp_path_factory.mktemp("flow")
    write_parties(workdir / "data", 3000, seed=1)
    return workdir, *_run(workdir)


def _shared_ids(data: Path) -> set[str]:
    """The IDs every party's file holds: what PSI must find, exactly."""
    return set.intersection(*(set(pd.read_csv(f)["user_id"]) for f in data.glob("*.csv")))


def test_first_run_writes_the_report(first_run):
    workdir, report, states = first_run
    assert set(states.values()) == {"Completed"}
    # + psi_align, train_split_mmoe, train_label_only, evaluate, register, promote, draw_plots,
    # publish_report
    assert len(states) == 3 * len(PARTY_STEPS) + 8
    assert report["psi"]["intersection"] == len(_shared_ids(workdir / "data"))
    assert report["rows"]["train"] + report["rows"]["test"] == report["psi"]["intersection"]
    assert report["notes"] == []
    # seven PSI orders: income 0.849-0.876
    assert report["tasks"]["income_50k"]["auc"] > 0.8611 - 0.06
    training = report["training"]
    trained = workdir / "parties" / "advertiser" / "trained"
    history = json.loads((trained / "history.json").read_text())
    mean_val_auc = [sum(aucs) / len(aucs) for aucs in zip(*history["val_auc"].values())]
    assert training["epochs_run"] == 8  # the config's epochs: the pinned run never stops early
    assert training["best_epoch"] == mean_val_auc.index(max(mean_val_auc)) + 1
    # every kind, message by message: two parties' PSI lists in one chunk and an end marker each
    # way; the checkpointed epochs each way; 8 epochs of 7 batches, one validation chunk and one
    # decision each; one test chunk
    assert {k: v["messages"] for k, v in report["channel"].items()} == {
        "psi_blinded": 8, "psi_double_blinded": 4, "psi_positions": 2, "split_mask": 2,
        "resume": 4, "embedding": 112, "gradient": 112, "validation_embedding": 16,
        "early_stopping": 16, "eval_embedding": 2}
    # rows/s counts the rows fitted (validation rows apart) over the training seconds recorded
    fitted = len(Plan.of(load_config(SYNTHETIC_TOML).training, report["rows"]["train"]).fit)
    assert training["rows_per_s"] == pytest.approx(8 * fitted / training["train_s"], rel=1e-9)
    for party in ("advertiser", "bank", "media"):
        assert (workdir / "export" / party / "manifest.json").exists()
    # the first version registered at every party becomes current: no champion to beat
    promotion = report["promotion"]
    assert (promotion["promote"], promotion["reasons"]) == (True, ["no champion yet"])
    for party in ("advertiser", "bank", "media"):
        models = workdir / "parties" / party / "models" / "synthetic"
        assert json.loads((models / "aliases.json").read_text())["current"] == promotion["version"]
        version = json.loads((models / promotion["version"] / "version.json").read_text())
        assert version["metrics"]["income_50k"]["auc"] == report["tasks"]["income_50k"]["auc"]
        assert version["input_sha256"] == hashlib.sha256(
            (workdir / "data" / f"{party}.csv").read_bytes()).hexdigest()
    # the label party alone is weak: seven PSI orders, lift 0.244-0.287 / 0.256-0.394
    for task, lift, margin in (("income_50k", 0.2651, 0.09), ("never_married", 0.3940, 0.28)):
        split = report["lift"][task]
        assert split["split"] == report["tasks"][task]["auc"] and split["central"] is None
        assert split["lift"] == split["split"] - split["label_only"] > lift - margin
    # no noise: the gradients leak labels. The mean of both attacks on both tasks reproduces
    # 0.6717 (0.5 would mean nothing leaks); 31 PSI orders so far gave 0.60-0.69
    attacks = [v for t in report["leakage"].values() for v in t.values()]
    assert sum(attacks) / len(attacks) > 0.6717 - 0.09


def test_the_report_is_in_the_run_folder_and_on_the_flow_runs_page(first_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    workdir, report, _ = first_run
    markdown = (workdir / "report" / "report.md").read_text()
    # three plots (curves, gate use, score distributions), each a PNG inside the Markdown
    assert markdown.count("](data:image/png;base64,iVBORw0KGgo") == 3
    assert f"| income_50k | {report['tasks']['income_50k']['auc']:.4f} |" in markdown
    assert f"Version `{report['promotion']['version']}`: **promoted to current**." in markdown
    with get_client(sync_client=True) as client:
        artifacts = {a.key: a for a in client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["synthetic-metrics", "synthetic-traffic",
                                        "synthetic-report", "synthetic-training"])))}
    assert set(artifacts) == {"synthetic-metrics", "synthetic-traffic", "synthetic-report",
                              "synthetic-training"}
    assert artifacts["synthetic-training"].data == 100.0
    assert artifacts["synthetic-training"].description == (
        f"done: 8 epochs run, the weights of epoch {report['training']['best_epoch']} kept")
    assert artifacts["synthetic-report"].data == markdown
    traffic = json.loads(artifacts["synthetic-traffic"].data)
    assert {row["kind"]: row["messages"] for row in traffic} == {
        k: v["messages"] for k, v in report["channel"].items()}


def test_each_epoch_moves_the_training_progress_artifact(prefect_api):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from tasks._progress import EpochProgress

    @flow
    def two_epochs_of_eight() -> None:
        progress = EpochProgress("progress-test", epochs=8)
        line = logging.LogRecord("splitrec_core.training.label_party", logging.INFO, __file__, 1,
                                 "epoch 2: loss ...", None, None)
        line.epoch, line.epochs = 2, 8
        progress.handle(line)
        progress.close()  # sends the last update

    two_epochs_of_eight()

    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["progress-test"])))
    assert (artifact.data, artifact.description) == (25.0, "epoch 2: loss ...")


def test_rerun_with_nothing_changed_is_all_cache_hits(first_run):
    workdir, report, _ = first_run
    rerun_report, states = _run(workdir)
    # registering and promoting change the registry: they always run, and find nothing new
    assert {n for n, s in states.items() if s != "Cached"} == {"register", "promote",
                                                                "publish_report"}, states
    assert rerun_report["promotion"] == report["promotion"] | {
        "champion": report["promotion"]["version"], "reasons": ["it is already the champion"]}
    assert rerun_report | {"promotion": None} == report | {"promotion": None}


def test_a_run_whose_every_step_is_cached_never_loads_tensorflow(first_run, tmp_path: Path):
    # Prepare: the session's API; its cached results, of the first run (the environment's)
    from prefect.settings import PREFECT_API_URL

    workdir, report, _ = first_run

    # Execute: `splitrec run` again, in a process of its own that lists what it imports
    run = _cli("run", str(SYNTHETIC_TOML), "--workdir", str(workdir), home=tmp_path / "prefect",
               api=PREFECT_API_URL.value(), python=("-X", "importtime"))

    # Assert: the same report, and neither TensorFlow nor Keras loaded
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"model version {report['promotion']['version']}: promoted" in run.stdout
    loaded = {line.rpartition("|")[2].strip() for line in run.stderr.splitlines()
              if line.startswith("import time:")}
    assert {"prefect", "pandas", "tasks.train"} <= loaded  # the list is the run's imports
    assert not {m for m in loaded if m.split(".")[0] in ("tensorflow", "keras")}


def test_changing_one_feature_party_reruns_only_what_depends_on_it(first_run):
    # Prepare: change one feature value of the bank (IDs untouched)
    workdir, _, _ = first_run
    path = workdir / "data" / "bank.csv"
    frame = pd.read_csv(path)
    frame.loc[0, "balance"] = frame.loc[0, "balance"] + 1234.5
    frame.to_csv(path, index=False)

    # Execute
    _, states = _run(workdir)

    # Assert
    reran = {name for name, state in states.items() if state == "Completed"}
    assert reran == {"validate-bank", "features-bank", "train_split_mmoe", "evaluate",
                     "export-advertiser", "export-bank", "export-media", "register", "promote",
                     "draw_plots", "publish_report"}
    assert {n for n, s in states.items() if s == "Cached"} == {
        "validate-advertiser", "validate-media", "psi_align", "features-advertiser",
        "features-media", "train_label_only"}


def test_changing_training_settings_keeps_the_alignment_and_features(first_run):
    # Prepare: another config over the same parties, named differently, training 2 epochs
    workdir, _, _ = first_run
    config = workdir / "shorter.toml"
    config.write_text(f'extends = "{SYNTHETIC_TOML}"\nname = "shorter"\n[training]\nepochs = 2\n')

    # Execute
    report, states = _run(workdir, config)

    # Assert: what reads only the parties' columns and the PSI settings was reused
    assert {n for n, s in states.items() if s == "Cached"} == {
        "validate-advertiser", "validate-bank", "validate-media", "psi_align",
        "features-advertiser", "features-bank", "features-media"}
    assert {n for n, s in states.items() if s == "Completed"} == {
        "train_split_mmoe", "train_label_only", "evaluate",
        "export-advertiser", "export-bank", "export-media", "register", "promote",
        "draw_plots", "publish_report"}
    assert report["training"]["epochs_run"] == 2


def test_a_cache_hit_never_hands_back_files_another_config_rewrote(first_run):
    # Prepare: another config over the same parties, which retrains in this workdir and so
    # rewrites the trained models, the exports and the report synthetic.toml's results name
    workdir, _, _ = first_run
    shorter = workdir / "shorter-again.toml"
    shorter.write_text(f'extends = "{SYNTHETIC_TOML}"\nname = "shorter"\n[training]\nepochs = 2\n')
    retrained = {"train_split_mmoe", "train_label_only", "evaluate", "export-advertiser",
                 "export-bank", "export-media", "register", "promote", "publish_report"}

    # Execute: synthetic.toml, shorter.toml, synthetic.toml again, all in the same workdir
    first, _ = _run(workdir)
    _, shorter_states = _run(workdir, shorter)
    again, again_states = _run(workdir)

    # Assert: each config retrains what the other rewrote, and reuses what both read (its
    # plots, drawn from bit-identical training files, may be a cache hit: they name no file)
    for states in (shorter_states, again_states):
        completed = {n for n, s in states.items() if s == "Completed"} - {"draw_plots"}
        assert completed == retrained, states
    history = json.loads((workdir / "parties" / "advertiser" / "trained" / "history.json")
                         .read_text())
    assert len(history["val_auc"]["income_50k"]) == again["training"]["epochs_run"] == 8
    # retrained bit for bit: the same version, already the champion
    assert again["tasks"] == first["tasks"]
    assert again["promotion"]["version"] == first["promotion"]["version"]
    assert again["promotion"]["reasons"] == ["it is already the champion"]


def _cli(*args: str, home: Path, api: str | None = None,
         python: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run `splitrec` in a fresh process with its own Prefect home.

    It talks to `api` (default: an ephemeral API of its own); `python` are the interpreter's
    own options.
    """
    env = os.environ | {"PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    if api:
        env["PREFECT_API_URL"] = api
    return subprocess.run([sys.executable, *python, "-m", "flows.cli", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)


def _aliases(workdir: Path, model: str = "synthetic") -> dict[str, dict]:
    return {p: json.loads((workdir / "parties" / p / "models" / model / "aliases.json").read_text())
            for p in ("advertiser", "bank", "media")}


def test_a_worse_retrain_stays_candidate_and_rollback_restores_the_champion(first_run, tmp_path):
    # Prepare: the same model, retrained for one epoch at a hundredth of the learning rate
    workdir, _, _ = first_run
    champion = _aliases(workdir)["advertiser"]["current"]
    worse = tmp_path / "worse.toml"
    worse.write_text(f'extends = "{SYNTHETIC_TOML}"\n[training]\nepochs = 1\n'
                     'learning_rate = 0.00002\n')

    # Execute
    report, _ = _run(workdir, worse)

    # Assert: the champion stays at every party, the report says why, the retrain is candidate
    promotion = report["promotion"]
    assert not promotion["promote"] and promotion["champion"] == champion
    assert promotion["reasons"][-1] == "more than the promotion margin 0.005 below"
    assert promotion["reasons"][0].startswith("income_50k test AUC ")
    aliases = {p: (a["current"], a["candidate"]) for p, a in _aliases(workdir).items()}
    assert aliases == dict.fromkeys(("advertiser", "bank", "media"),
                                    (champion, promotion["version"]))

    # Execute: promoted by hand from the CLI, then rolled back
    home = tmp_path / "prefect"
    listed = _cli("models", "list", str(SYNTHETIC_TOML), "--workdir", str(workdir), home=home)
    promoted = _cli("models", "promote", str(SYNTHETIC_TOML), "candidate", "--workdir",
                    str(workdir), home=home)
    after_promotion = {p: a["current"] for p, a in _aliases(workdir).items()}
    rolled_back = _cli("models", "rollback", str(SYNTHETIC_TOML), "--workdir", str(workdir),
                       home=home)

    # Assert
    assert listed.returncode == 0, listed.stderr
    assert f"{champion}  " in listed.stdout and listed.stdout.rstrip().endswith("candidate")
    assert promoted.returncode == 0, promoted.stderr
    assert rolled_back.returncode == 0, rolled_back.stderr
    assert set(after_promotion.values()) == {promotion["version"]}
    assert {p: a["current"] for p, a in _aliases(workdir).items()} == dict.fromkeys(
        ("advertiser", "bank", "media"), champion)
    assert f"current: {champion}" in rolled_back.stdout



def test_cli_reports_bad_input_and_exits_2(tmp_path: Path, prefect_api):
    # Prepare: a party file with a duplicate ID; the session's Prefect API (starting an
    # ephemeral one costs the CLI about 15 s)
    from prefect.settings import PREFECT_API_URL

    from splitrec_core.datasets.synthetic import write_parties

    write_parties(tmp_path / "data", 500, seed=2)
    media = tmp_path / "data" / "media.csv"
    frame = pd.read_csv(media)
    frame.loc[4, "user_id"] = frame.loc[1, "user_id"]
    frame.to_csv(media, index=False)

    # Execute
    duplicate = _cli("run", str(SYNTHETIC_TOML), "--workdir", str(tmp_path),
                     home=tmp_path / "prefect", api=PREFECT_API_URL.value())

    # Assert
    assert duplicate.returncode == 2, duplicate.stderr[-2000:]
    assert (f"error: {media}, column 'user_id': party 'media': 1 duplicate ID(s) in 2 row(s)"
            in duplicate.stderr)
    assert "Traceback" not in duplicate.stderr + duplicate.stdout
    assert not (tmp_path / "parties" / "media" / "validated").exists()


def _failed_run_telling(block: str, workdir: Path) -> tuple[object, list[str]]:
    """Run the pipeline with `[notify] block` on a bank file with a duplicate ID.

    Returns the run's final state and its log lines.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    from flows.pipeline import train_pipeline
    from splitrec_core.datasets.synthetic import write_parties

    config = workdir / "notify.toml"
    config.write_text(f'extends = "{SYNTHETIC_TOML}"\n[notify]\nblock = "{block}"\n')
    bank = write_parties(workdir / "data", 500, seed=2)["bank"]
    frame = pd.read_csv(bank)
    frame.loc[4, "user_id"] = frame.loc[1, "user_id"]
    frame.to_csv(bank, index=False)
    state = train_pipeline(str(config), str(workdir), return_state=True)
    APILogHandler().flush()  # logs reach the API in batches: send what is queued
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(
            any_=[state.state_details.flow_run_id])))
    return state, [log.message for log in logs]


def test_a_failed_run_names_the_step_and_party_and_tells_the_notification_block(
        tmp_path: Path, prefect_api):
    # Prepare: a webhook receiver on 127.0.0.1 behind a notification block the config names
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    received: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # the name http.server calls
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    CustomWebhookNotificationBlock(name="ops", url=f"http://127.0.0.1:{server.server_port}/",
                                   json_data={"text": "{{body}}"}).save("splitrec-ops",
                                                                         overwrite=True)

    # Execute: a bank file with a duplicate ID
    state, logs = _failed_run_telling("custom-webhook/splitrec-ops", tmp_path)
    server.shutdown()

    # Assert: one message, the same line in the run's log
    with pytest.raises(InputError):
        state.result()
    [message] = received
    assert " of synthetic failed at step validate at party bank: " in message["text"]
    assert "party 'bank': 1 duplicate ID(s) in 2 row(s)" in message["text"]
    assert message["text"] in logs


def test_an_empty_intersection_names_the_parties_own_files_and_id_column(tmp_path: Path,
                                                                         prefect_api):
    from flows.pipeline import train_pipeline
    from splitrec_core.datasets.synthetic import write_parties

    files = write_parties(tmp_path / "data", 500, seed=2)
    media = pd.read_csv(files["media"])
    media.assign(user_id="stranger-" + media["user_id"].astype(str)).to_csv(files["media"],
                                                                            index=False)

    with pytest.raises(InputError) as caught:
        train_pipeline(str(SYNTHETIC_TOML), str(tmp_path))

    assert str(caught.value) == (
        f"{files['advertiser']}, {files['bank']}, {files['media']}, column 'user_id': empty "
        f"intersection: no ID is held by all of ['advertiser', 'bank', 'media']")


def test_a_notification_block_that_does_not_exist_costs_one_line_that_says_how_to_make_it(
        tmp_path: Path, prefect_api):
    # Execute: the README's example block, never made, told of a failed run
    state, logs = _failed_run_telling("slack-webhook/ops", tmp_path)

    # Assert: the failure, then one line on the block; no traceback of the hook
    with pytest.raises(InputError):
        state.result()
    [line] = [m for m in logs if "notify.block" in m]
    assert line.startswith("no message sent: notify.block 'slack-webhook/ops' cannot be loaded")
    assert "Blocks → + → the slack-webhook block type, named 'ops'" in line
    # (the run's own failure comes with Prefect's traceback of the InputError, as ever)
    assert not [m for m in logs if "while running hook" in m]
    assert not [m for m in logs if "Traceback" in m and "notify" in m]


def test_a_config_error_stops_the_cli_before_prefect_starts(tmp_path: Path):
    # Prepare: a config naming an unknown label party, run into a workdir of its own
    bad_config = tmp_path / "bad.toml"
    bad_config.write_text(SYNTHETIC_TOML.read_text().replace('label_party = "advertiser"',
                                                             'label_party = "retailer"'))
    home = tmp_path / "prefect"

    # Execute
    unknown = _cli("run", str(bad_config), "--workdir", str(tmp_path / "run"), home=home)

    # Assert: one line naming the file and the problem, and no Prefect API was started for it
    assert unknown.returncode == 2
    assert unknown.stderr == (f"error: {bad_config}: label_party 'retailer' is not one of the "
                              "parties ['advertiser', 'bank', 'media']\n")
    assert not (home / "prefect.db").exists()


def test_the_cli_gives_a_first_prefect_start_90_s():
    # A fresh machine's first run creates the temporary API's database: it took 20.1 s once,
    # and Prefect's own limit is 20 s
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_SERVER_EPHEMERAL")}
    probe = ("import flows.cli; from prefect.settings import get_current_settings; "
             "print(get_current_settings().server.ephemeral.startup_timeout_seconds)")
    run = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True,
                         text=True, check=True)
    assert float(run.stdout) == 90


def test_the_flow_and_every_result_a_cached_rerun_reads_load_without_tensorflow():
    # A rerun with everything cached unpickles the tasks' results: loading TensorFlow for them
    # would cost seconds and hundreds of MB for nothing
    probe = ("import sys, flows.cli, flows.pipeline, flows.sweep, splitrec_core.results; "
             "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True,
                         check=True)
    assert run.stdout.strip() == "[]"


class _Messages(logging.Handler):
    """Keeps the messages logged to a logger."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_task_without_positive_test_rows_gets_a_null_auc_and_the_reason(tmp_path: Path,
                                                                          prefect_api):
    # Prepare: no test row of the label party has never_married = 1; two epochs are enough
    from splitrec_core.datasets.synthetic import write_parties

    write_parties(tmp_path / "data", 1500, seed=3)
    advertiser = tmp_path / "data" / "advertiser.csv"
    frame = pd.read_csv(advertiser)
    frame.loc[frame["split"] == "test", "never_married"] = 0
    frame.to_csv(advertiser, index=False)
    config = tmp_path / "short.toml"
    config.write_text(f'extends = "{SYNTHETIC_TOML}"\nname = "short"\n[training]\nepochs = 2\n')
    logged = _Messages()
    logging.getLogger("prefect.task_runs").addHandler(logged)

    # Execute
    try:
        _run(tmp_path, config)
    finally:
        logging.getLogger("prefect.task_runs").removeHandler(logged)

    # Assert: metrics.json is strict JSON; the AUC and the lift are null, and the report and the
    # log say why
    def reject(constant: str) -> None:
        raise ValueError(f"metrics.json holds {constant}, which is not JSON")

    report = json.loads((tmp_path / "report" / "metrics.json").read_text(), parse_constant=reject)
    never_married = report["tasks"]["never_married"]
    assert never_married["auc"] is None and never_married["positives"] == 0
    assert report["lift"]["never_married"]["lift"] is None
    reason = (f"never_married: test AUC is null: none of its {never_married['rows']} test rows has "
              "a positive label, and AUC needs both")
    assert report["notes"] == [reason]
    assert reason in logged.messages
    assert report["tasks"]["income_50k"]["auc"] > 0.6117 - 0.05  # seven PSI orders: 0.597-0.623


def test_sweep_reuses_the_features_and_compares_every_grid_point(first_run):
    # Execute: a sweep in the workdir the pipeline already prepared
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.sweep import sweep

    workdir, _, _ = first_run
    state = sweep(str(SYNTHETIC_TOML), str(workdir), return_state=True)
    table = Path(state.result()).read_text()
    rows = json.loads((workdir / "report" / "sweep.json").read_text())
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    states = {run.name: run.state.name for run in runs}

    # Assert: 2 expert counts x 1 size x 2 weightings, each trained and scored; steps 1-3 cached
    assert [(r["num_experts"], r["task_weights"]) for r in rows] == [
        (2, [1.0, 1.0]), (2, [1.0, 2.0]), (4, [1.0, 1.0]), (4, [1.0, 2.0])]
    # weakest grid point, seven PSI orders: 0.849-0.864 / 0.846-0.871
    assert min(r["auc"]["income_50k"] for r in rows) > 0.8611 - 0.05
    assert min(r["auc"]["never_married"] for r in rows) > 0.8601 - 0.05
    assert len({r["auc"]["never_married"] for r in rows}) == 4  # four different models
    assert table.count("\n") == 2 + 4
    for name in ("validate-bank", "psi_align", "features-media"):
        assert states[name] == "Cached"
    assert sorted(p.name for p in (workdir / "sweep").iterdir()) == ["00", "01", "02", "03"]
