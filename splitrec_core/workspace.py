"""Where each step writes inside a run's workdir; every party has a folder of its own."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    """The layout of one run folder."""

    root: Path

    def party(self, name: str) -> Path:
        """A party's private folder: only that party's steps read or write it."""
        return self.root / "parties" / name

    def validated(self, name: str) -> Path:
        """Checked inputs: `ids.parquet`, `validated.parquet` (and `split.parquet`)."""
        return self.party(name) / "validated"

    def aligned(self, name: str) -> Path:
        """The party's rows in the common order, with the train flag."""
        return self.party(name) / "aligned.parquet"

    def unmatched(self, name: str) -> Path:
        """The party's own IDs outside the intersection (written only if the config asks)."""
        return self.party(name) / "unmatched.parquet"

    def features(self, name: str) -> Path:
        """Engineered `train.parquet`, `test.parquet` and `transform.json`."""
        return self.party(name) / "features"

    def trained(self, name: str) -> Path:
        """The party's trained model files (and, at the label party, test predictions)."""
        return self.party(name) / "trained"

    def registry(self, name: str, model: str) -> Path:
        """The party's registry of `model`: a folder per registered version, and its aliases."""
        return self.party(name) / "models" / model

    def scoring(self, name: str) -> Path:
        """The party's checked new rows and their alignment, for the scoring run at hand."""
        return self.party(name) / "scoring"

    def scores(self, label: str) -> Path:
        """The label party's predictions for new rows: `scores_file`, one per scoring run."""
        return self.party(label) / "scores"

    def scores_file(self, label: str, version: str, run: str) -> Path:
        """The predictions of scoring run `run` with `version`; no run replaces another's."""
        return self.scores(label) / f"{version}-{run}.parquet"

    def export(self, name: str) -> Path:
        """The party's servable export."""
        return self.root / "export" / name

    @property
    def central(self) -> Path:
        """The centralised baseline (all columns pooled): a comparison only, never deployed."""
        return self.root / "central"

    def label_only(self, label: str) -> Path:
        """The label party's model on its own columns: the baseline of the federation lift."""
        return self.party(label) / "label_only"

    @property
    def report(self) -> Path:
        """Metrics and the run report."""
        return self.root / "report"
