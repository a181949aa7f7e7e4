"""The same composed model trained in one place, with the same plan as split training.

With every party's columns it is the pooled-data baseline a federation is measured against
(which no federation can run: it is a one-process option), with the label party's alone what it
could do without federating (the baseline of the federation lift).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pyarrow as pa
import tensorflow as tf

from splitrec_core.config import Config
from splitrec_core.cpu import process_cpu_s
from splitrec_core.events import People
from splitrec_core.features import FeatureMatrix, PartyFeatures, Transform
from splitrec_core.io import write_json, write_parquet
from splitrec_core.results import TrainResult
from splitrec_core.training.epochs import BestWeights, History, Plan, auc_per_task, eval_batches
from splitrec_core.training.event_matrix import event_batches
from splitrec_core.training.models import build_bottom, build_top, party_order, task_weighting
from splitrec_core.training.runs import TrainedRun, save_model, write_result
from splitrec_core.training.steps import CentralTrainer, set_op_threads


@dataclass(frozen=True)
class CentralRun:
    """What central training starts from.

    Each party's matrices, the same freshly seeded models as split training, and the plan of
    epochs. When the label party holds events, `people` groups its train and test rows by
    person, and the composed model spreads each other party's embedding of a person to that
    person's events, as split training does (`composed_model`).
    """

    train: dict[str, FeatureMatrix]
    test: dict[str, FeatureMatrix]
    bottoms: dict[str, keras.Model]
    top: keras.Model
    plan: Plan
    label: str
    people: dict[str, People] | None = None

    @classmethod
    def load(cls, cfg: Config, features: dict[str, PartyFeatures]) -> CentralRun:
        """Read the matrices of the parties in `features` and build their models."""
        order, label = party_order(cfg, features), cfg.label_party
        train = {p: FeatureMatrix.read(features[p].train) for p in order}
        people = None
        if cfg.label.events:
            people = {split: People.of_positions(FeatureMatrix.positions(path))
                      for split, path in (("train", features[label].train),
                                          ("test", features[label].test))}
        plan = Plan.of(cfg.training, len(people["train"]) if people else len(train[label]))
        return cls(train, {p: FeatureMatrix.read(features[p].test) for p in order},
                   {p: build_bottom(cfg, p, Transform.load(features[p].transform)) for p in order},
                   build_top(cfg, order), plan, label, people)

    @property
    def spread(self) -> bool:
        """Whether other parties' embeddings are spread to the label party's events."""
        return self.people is not None and len(self.bottoms) > 1

    def inputs(self, split: str, people: np.ndarray) -> list[np.ndarray]:
        """The model's inputs for `people` (rows of the `split` "train" or "test")."""
        data = self.train if split == "train" else self.test
        if self.people is None:
            return [m[people] for p in self.bottoms for m in (data[p].cats, data[p].nums)]
        rows, person = self.people[split].rows(people)
        inputs = [m[rows if p == self.label else people]
                  for p in self.bottoms for m in (data[p].cats, data[p].nums)]
        return inputs + ([person.astype(np.int32)] if self.spread else [])

    def labels(self, split: str, people: np.ndarray, tasks: list[str]) -> np.ndarray:
        """The label party's labels of `people`'s rows (with events, of their events)."""
        data = (self.train if split == "train" else self.test)[self.label]
        rows = people if self.people is None else self.people[split].rows(people)[0]
        return data.task_labels(tasks)[rows]

    def batches(self, epoch: int, tasks: list[str]) -> list[tuple[tf.Tensor, ...]]:
        """Every batch of `epoch` as split training draws it: the model's inputs, then labels."""
        train = [(self.train[p].cats, self.train[p].nums) for p in self.bottoms]
        labels = self.train[self.label].task_labels(tasks)
        if self.people is None:
            return self.plan.batch_tensors(epoch, *(m for pair in train for m in pair), labels)
        own = event_batches(self.plan, epoch, self.people["train"], *train[0], labels)
        others = self.plan.batch_tensors(epoch, *(m for pair in train[1:] for m in pair))
        if not self.spread:
            return [(cats, nums, y) for cats, nums, y, _ in own]
        return [(cats, nums, *theirs, person, y)
                for (cats, nums, y, person), theirs in zip(own, others, strict=True)]


def train_central(cfg: Config, features: dict[str, PartyFeatures], out_dir: Path) -> TrainResult:
    """Train the same composed model in one place on the columns of the parties in `features`.

    It follows the same plan: fitting rows, batch order, validation rows and early stopping.
    With every party it is the pooled-data baseline; with the label party alone, what the label
    party could do without federating (the baseline for the federation lift).
    """
    set_op_threads(cfg.training.xla)
    run = CentralRun.load(cfg, features)
    plan, tasks = run.plan, cfg.task_names
    trainer = CentralTrainer(run.bottoms, run.top, task_weighting(cfg),
                             plan.learning_rate(cfg.training), cfg.training.xla,
                             spread=run.spread)

    def probabilities(split: str, people: np.ndarray) -> np.ndarray:
        predicted = (trainer.predict(run.inputs(split, chunk)).numpy()
                     for chunk in eval_batches(people))
        return np.concatenate([np.zeros((0, len(tasks)), np.float32), *predicted])

    history, best = History(), BestWeights(trainer.models)
    start_all = time.perf_counter()
    trainer.trace(plan.batch_sizes)
    startup_s = time.perf_counter() - start_all
    start_all, cpu_at_start = time.perf_counter(), process_cpu_s()
    for epoch in range(plan.epochs):
        start, losses = time.perf_counter(), []
        for *batch, batch_labels in run.batches(epoch, tasks):
            losses.append(trainer.step(batch, batch_labels).numpy())
        val_auc = (auc_per_task(run.labels("train", plan.validation, tasks),
                                probabilities("train", plan.validation))
                   if len(plan.validation) else [])
        history.record(losses, val_auc, trainer.gate_usage(batch).numpy(),
                       trainer.weighting.effective_weights().numpy(), start)
        decision = history.decide(plan.patience, last_epoch=epoch == plan.epochs - 1)
        if decision.improved:
            best.keep()
        if decision.stop:
            break
    best.restore()
    seconds, cpu_s = time.perf_counter() - start_all, process_cpu_s() - cpu_at_start
    tested = len(run.people["test"]) if run.people else len(run.test[run.label])
    test = probabilities("test", np.arange(tested))
    models = {"pooled": save_model(trainer.model, out_dir / "model.keras")}
    trained = TrainedRun(history, test, len(plan.fit), startup_s, seconds, cpu_s, models)
    return write_result(cfg, trained, label_test=features[run.label].test, out_dir=out_dir)


def train_label_alone(cfg: Config, features: PartyFeatures, out_dir: Path) -> TrainResult:
    """What the label party could do without federating.

    That is the same model on its own columns, with the same plan; if it holds no feature
    columns, each task's training base rate (all a model without inputs can learn), written as
    the same predictions file.
    """
    if cfg.label.feature_columns:
        return train_central(cfg, {cfg.label_party: features}, out_dir)
    tasks = cfg.task_names
    rates = FeatureMatrix.read(features.train).task_labels(tasks).mean(axis=0)
    positions = FeatureMatrix.positions(features.test)
    columns = {"position": positions} | {f"p:{t}": np.full(len(positions), rates[j], np.float32)
                                         for j, t in enumerate(tasks)}
    return TrainResult(
        models={}, predictions=write_parquet(pa.table(columns), out_dir / "predictions.parquet"),
        history=write_json({"base_rate": dict(zip(tasks, rates.tolist(), strict=True))},
                           out_dir / "history.json"),
        rows_per_s=0.0, cpu_s_per_1k_rows=0.0, train_s=0.0, startup_s=0.0, epochs_run=0,
        best_epoch=0, channel={}, leakage={})
