"""The run report: metrics.json read back as the `Report` it was, the terminal summary, plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from splitrec_core.io import read_json
from splitrec_core.registry.promotion import Verdict
from splitrec_core.report import Report, VersionMetrics, plots, terminal_summary


def test_scores_that_barely_vary_still_plot():
    # Prepare: a task whose test scores span one float32 step (a model that learned almost
    # nothing for it), as the scale benchmark's two-party run at 1M people produced
    flat = np.full(1000, 0.3, np.float32)
    flat[0] = np.nextafter(flat[0], np.float32(1))
    history = {"task_loss": {"a": [0.6, 0.5], "b": [0.7, 0.69]},
               "val_auc": {"a": [0.8, 0.9], "b": [0.5, 0.5]}, "best_epoch": 2,
               "gate_mean": {"a": [[0.5, 0.5], [0.6, 0.4]], "b": [[0.5, 0.5], [0.5, 0.5]]}}

    # Execute
    drawn = plots(history, {"a": np.linspace(0, 1, 1000, dtype=np.float32), "b": flat})

    # Assert: three PNGs, the score distributions among them
    assert len(drawn) == 3
    assert all(p.startswith("![plot](data:image/png;base64,") for p in drawn)


def _report(**changes) -> Report:
    """A two-task run's report with hand-written figures."""
    fields = dict(
        tasks={"buys": {"auc": 0.75, "logloss": 0.5, "predicted_rate": 0.42,
                        "observed_rate": 0.4, "positives": 40, "rows": 100},
               "clicks": {"auc": None, "logloss": 0.1, "positives": 0, "rows": 100}},
        intersection=500, train_rows=400, test_rows=100,
        channel={"psi_blinded": {"bytes": 500_000, "messages": 10},
                 "embedding": {"bytes": 1_000_000, "messages": 20}},
        training={"rows_per_s": 1234.4, "train_s": 3.0, "cpu_s_per_1k_rows": 4.86,
                  "startup_s": 1.0, "epochs_run": 3, "best_epoch": 2},
        leakage={"buys": {"norm_auc": 0.61, "cosine_auc": 0.52},
                 "clicks": {"norm_auc": 0.5, "cosine_auc": 0.5}},
        label_only={"buys": {"auc": 0.7, "logloss": 0.6, "positives": 40, "rows": 100},
                    "clicks": {"auc": None, "logloss": 0.2, "positives": 0, "rows": 100}},
    )
    return Report(**(fields | changes))


VERDICT = Verdict("abc", "v0", False, ["buys test AUC 0.7500 against the champion's 0.8000"])


@pytest.mark.parametrize("changes", [
    {},
    {"central": {"buys": {"auc": 0.8, "logloss": 0.4, "positives": 40, "rows": 100},
                 "clicks": {"auc": None, "logloss": 0.1, "positives": 0, "rows": 100}},
     "label_has_features": False, "promotion": VERDICT},
    {"psi_protocol": "rr22"},
    {"events": {"kept": 900, "dropped": 12}},
], ids=["split-only", "central-and-verdict", "rr22", "events"])
def test_metrics_json_reads_back_as_the_report_it_was(tmp_path: Path, changes):
    # Prepare
    report = _report(**changes)

    # Execute
    path = report.save(tmp_path / "metrics.json")
    loaded = Report.load(path)

    # Assert: the same report, and a file people and tests read keeps its keys
    assert loaded == report
    assert read_json(path) == loaded.as_json()
    assert {"tasks", "notes", "psi", "rows", "channel", "training", "leakage", "lift"} <= set(
        read_json(path))
    assert ("promotion" in read_json(path)) == ("promotion" in changes)


def test_the_registry_verdict_is_added_to_the_saved_report(tmp_path: Path):
    # Prepare
    path = _report().save(tmp_path / "metrics.json")

    # Execute
    Report.load(path).with_verdict(VERDICT).save(path)

    # Assert
    saved = read_json(path)
    assert saved["promotion"] == {"version": "abc", "champion": "v0", "promote": False,
                                  "reasons": ["buys test AUC 0.7500 against the champion's 0.8000"]}
    assert Report.load(path).promotion == VERDICT


def test_a_version_records_the_reports_metrics_as_they_were_sent_before(tmp_path: Path):
    # Prepare
    path = _report().save(tmp_path / "metrics.json")

    # Execute
    metrics = Report.load(path).version_metrics

    # Assert: the JSON the label party sends with parties apart is byte for byte the one it
    # built from metrics.json's keys, and reads back as the same metrics
    before = {k: read_json(path)[k] for k in ("tasks", "training", "leakage")}
    assert json.dumps(metrics.as_json()) == json.dumps(before)
    assert VersionMetrics.from_json(json.loads(json.dumps(metrics.as_json()))) == metrics


def test_the_terminal_summary_reads_the_report(tmp_path: Path):
    # Execute
    lines = terminal_summary(_report(promotion=VERDICT), tmp_path / "metrics.json",
                             tmp_path / "export").splitlines()

    # Assert
    assert lines[1].split() == ["buys", "0.7500", "0.5000", "0.4200", "/", "0.4000", "0.7000",
                                "+0.0500", "0.610", "/", "0.520"]
    assert lines[2].split()[:2] == ["clicks", "n/a"]
    assert lines[3] == ("sent between parties: 1.5 MB in 30 messages (PSI 0.5 MB); 3 epochs, "
                        "kept 2, 1,234 rows/s, 4.86 CPU s per 1,000 rows")
    assert lines[4] == ("model version abc: not promoted, v0 stays current (buys test AUC 0.7500 "
                        "against the champion's 0.8000)")
    assert lines[5].startswith("note: clicks: test AUC is null")
    assert lines[6] == (f"report: {tmp_path / 'metrics.json'} and {tmp_path / 'report.md'}; "
                        f"exports: {tmp_path / 'export'}/<party>")


def test_a_run_aligned_by_rr22_says_what_its_feature_parties_learned(tmp_path: Path):
    # Execute
    saved = read_json(_report(psi_protocol="rr22").save(tmp_path / "metrics.json"))

    # Assert: the protocol, and the one thing it reveals beyond ECDH, in the report's notes
    assert saved["psi"] == {"intersection": 500, "protocol": "rr22"}
    assert any("each feature party learned which of its IDs it shares with the label party"
               in note for note in saved["notes"])
    assert not any("RR22" in note for note in _report().notes)


def test_a_run_on_events_shows_gauc_and_the_dropped_events(tmp_path: Path):
    # Prepare: the label party held events; GAUC measured per task
    report = _report(events={"kept": 900, "dropped": 12})
    report.tasks["buys"]["gauc"] = 0.66
    report.tasks["clicks"]["gauc"] = None

    # Execute
    lines = terminal_summary(report, tmp_path / "metrics.json", tmp_path / "export").splitlines()

    # Assert
    assert lines[0].split()[:4] == ["task", "AUC", "GAUC", "log"]
    assert lines[1].split()[:3] == ["buys", "0.7500", "0.6600"]
    assert any(line.startswith("note: the label party holds events: 900 of its events belong "
                               "to people in the intersection and were used; 12 (of people "
                               "outside it) were dropped") for line in lines)
