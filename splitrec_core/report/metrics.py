"""A run's `metrics.json`: the report of a run, and what a model version records of it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from splitrec_core.channel import ChannelStats
from splitrec_core.evaluate import TaskMetrics, undefined_auc
from splitrec_core.features import PartyFeatures
from splitrec_core.io import read_json, write_json
from splitrec_core.psi import Alignment
from splitrec_core.registry.promotion import Verdict
from splitrec_core.results import TrainResult


def _difference(a: float | int | None, b: float | int | None) -> float | None:
    return None if a is None or b is None else float(a) - float(b)


@dataclass(frozen=True)
class VersionMetrics:
    """What a model version records of its run's report.

    That is the per-task test metrics, the training summary and the leakage audit. With parties
    apart, the label party sends them to every feature party (`as_json`, `from_json`), so each
    party's part of the version records the same.
    """

    tasks: dict[str, TaskMetrics]
    training: dict[str, float | int]
    leakage: dict[str, dict[str, float]]

    def as_json(self) -> dict[str, Any]:
        """The mapping sent to the feature parties."""
        return {"tasks": self.tasks, "training": self.training, "leakage": self.leakage}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VersionMetrics:
        """The metrics `as_json` gave."""
        return cls(data["tasks"], data["training"], data["leakage"])


@dataclass(frozen=True)
class Report:
    """A run's `metrics.json`.

    It holds the per-task test metrics, sizes and the PSI protocol, traffic per message kind,
    training speed and epochs (run, and kept by early stopping), the leakage audit of the
    gradients the label party sent, and the federation lift: test AUC of the split model, of the
    label party alone and (if trained) of all columns pooled. Once the model registry has judged
    the version, it also holds the registry's verdict (`promotion`).
    """

    tasks: dict[str, TaskMetrics]
    intersection: int
    train_rows: int
    test_rows: int
    channel: dict[str, dict[str, int]]
    training: dict[str, float | int]
    leakage: dict[str, dict[str, float]]
    label_only: dict[str, TaskMetrics]
    central: dict[str, TaskMetrics] | None = None
    label_has_features: bool = True
    promotion: Verdict | None = None
    psi_protocol: str = "ecdh"
    events: dict[str, float] | None = None

    @classmethod
    def of(cls, tasks: dict[str, TaskMetrics], alignment: Alignment, training: TrainResult,
           label_only: dict[str, TaskMetrics], central: dict[str, TaskMetrics] | None = None,
           label_has_features: bool = True, label_features: PartyFeatures | None = None,
           ) -> Report:
        """The report of a run from its alignment, its split training and test metrics.

        The test metrics are the split model's, the label party's alone and (if trained) those
        of all columns pooled. `label_features` says how many events the label party kept and
        dropped, if it holds events; the leakage audit's activity attack goes beside them.
        """
        events: dict[str, float] | None = None
        if label_features is not None and label_features.events is not None:
            events = {"kept": label_features.events, "dropped": label_features.dropped_events}
            if training.activity_auc is not None:
                events["activity_auc"] = training.activity_auc
        return cls(tasks, alignment.intersection, alignment.train_rows, alignment.test_rows,
                   ChannelStats.merge(alignment.channel, training.channel), training.speed,
                   training.leakage, label_only, central, label_has_features,
                   psi_protocol=alignment.protocol, events=events)

    @property
    def notes(self) -> list[str]:
        """What a reader must know to read the figures.

        That is why an AUC is null, and what the label party's baseline is.
        """
        notes = undefined_auc(self.tasks)
        if not self.label_has_features:
            notes.append("the label party holds no feature columns: its label-only baseline "
                         "predicts each task's training base rate (AUC 0.5), so the lift is "
                         "the split model's AUC above chance")
        if self.events is not None:
            notes.append(f"the label party holds events: {self.events['kept']:,} of its events "
                         f"belong to people in the intersection and were used; "
                         f"{self.events['dropped']:,} (of people outside it) were dropped. AUC "
                         f"and log loss are over events, GAUC averages each person's AUC, "
                         f"weighted by its events; the rows above count people")
            if "activity_auc" in self.events:
                notes.append(f"a person's gradient sums its events, so its norm tells how active "
                             f"the person is: guessing from it who has more events than the "
                             f"median person scores AUC {self.events['activity_auc']:.3f} "
                             f"(0.5: not at all; gradient_noise blunts it)")
        if self.psi_protocol == "rr22":
            notes.append("PSI ran RR22 (spu), a pair per feature party with the label party "
                         "receiving: each feature party learned which of its IDs it shares with "
                         "the label party, which with three or more parties is more than the "
                         "people every party shares (under ECDH it learns only those)")
        return notes

    @property
    def lift(self) -> dict[str, dict[str, float | None]]:
        """Per task: test AUC split, label party alone, central; split minus label party alone."""
        return {t: {"split": m["auc"], "label_only": self.label_only[t]["auc"],
                    "central": self.central[t]["auc"] if self.central else None,
                    "lift": _difference(m["auc"], self.label_only[t]["auc"])}
                for t, m in self.tasks.items()}

    @property
    def version_metrics(self) -> VersionMetrics:
        """What a model version of this run records of it."""
        return VersionMetrics(self.tasks, self.training, self.leakage)

    def with_verdict(self, verdict: Verdict) -> Report:
        """This report with the model registry's verdict on the run's version."""
        return replace(self, promotion=verdict)

    def as_json(self) -> dict[str, object]:
        """The mapping written to `metrics.json`.

        Besides what people read (the notes and the lift), it keeps everything `load` needs to
        give the same report back: the label party's own metrics and whether it holds features.
        """
        report: dict[str, object] = {
            "tasks": self.tasks,
            "notes": self.notes,
            "psi": {"intersection": self.intersection, "protocol": self.psi_protocol},
            "rows": {"train": self.train_rows, "test": self.test_rows},
            "channel": self.channel,
            "training": self.training,
            "leakage": self.leakage,
            "lift": self.lift,
            "label_only": self.label_only,
            "label_has_features": self.label_has_features,
        }
        if self.central is not None:
            report["central"] = self.central
        if self.events is not None:
            report["events"] = self.events
        if self.promotion is not None:
            report["promotion"] = self.promotion.as_json()
        return report

    def save(self, path: Path) -> Path:
        """Write the report to `path` (`metrics.json`)."""
        return write_json(self.as_json(), path)

    @classmethod
    def load(cls, path: Path) -> Report:
        """The report a `metrics.json` written by `save` holds."""
        saved = read_json(path)
        verdict = saved.get("promotion")
        return cls(
            tasks=saved["tasks"], intersection=saved["psi"]["intersection"],
            train_rows=saved["rows"]["train"], test_rows=saved["rows"]["test"],
            channel=saved["channel"], training=saved["training"], leakage=saved["leakage"],
            label_only=saved["label_only"], central=saved.get("central"),
            label_has_features=saved["label_has_features"],
            promotion=Verdict(**verdict) if verdict is not None else None,
            psi_protocol=saved["psi"].get("protocol", "ecdh"), events=saved.get("events"),
        )
