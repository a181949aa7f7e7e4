"""Split training: each feature party steps its own bottom; the label party steps its own bottom
and the MMoE top.

Per batch a feature party sends h_p (after optional clipping and noise); the label party computes
the multi-task loss through its own bottom and the top, returns dL/dh_p (optionally noised) and
steps (pipelined: both in one call); each feature party steps its bottom with
`tape.gradient(h_p, vars, output_gradients=g)`. After each epoch the label party scores the
held-out validation rows and decides, for everyone, whether to keep the weights and whether to
stop. Batch order and validation rows come from a seed every party shares, so no row indices
travel. `train_central` trains the same composed model in one place with the same plan, for the
comparison a federation must win.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import keras
import numpy as np
import pyarrow as pa
import tensorflow as tf

from splitrec_core.channel import Channel, ChannelStats, Kind, LocalHub, array_table, table_array
from splitrec_core.channel.processes import run_in_processes
from splitrec_core.checkpoint import Checkpoints, common_epoch, fingerprint
from splitrec_core.config import Config
from splitrec_core.epochs import BestWeights, Decision, History, Plan, auc_per_task, eval_batches
from splitrec_core.entropy import private_seed
from splitrec_core.features import FeatureMatrix, PartyFeatures, Transform
from splitrec_core.io import atomic_path, write_json, write_parquet
from splitrec_core.model import TaskWeighting, bottom_model, top_model
from splitrec_core.privacy import LeakageAudit
from splitrec_core.results import TrainResult
from splitrec_core.trainers import BottomTrainer, CentralTrainer, LabelTrainer, set_op_threads

_SEEDING = threading.Lock()  # Keras' seed is process-wide: parties on threads build in turn


def _model_seed(seed: int, model: str) -> int:
    """Each model's own initialisation seed: a party builds its part alone, and identically."""
    return (seed * 1_000_003 + zlib.crc32(model.encode())) % 2**31


def party_order(cfg: Config, present: Collection[str]) -> list[str]:
    """The parties in `present`, label party first: the order of the top's inputs."""
    return [p for p in [cfg.label_party, *(p.name for p in cfg.feature_parties)] if p in present]


def build_bottom(cfg: Config, party: str, transform: Transform) -> keras.Model:
    """`party`'s bottom, seeded from the shared seed and its name."""
    with _SEEDING:
        keras.utils.set_random_seed(_model_seed(cfg.training.seed, party))
        return bottom_model(party, transform.vocab_sizes(), len(transform.numeric), cfg.model,
                            cfg.privacy.clip_norm)


def build_top(cfg: Config, parties: list[str]) -> keras.Model:
    """The MMoE top over `parties`' embeddings, seeded from the shared seed."""
    with _SEEDING:
        keras.utils.set_random_seed(_model_seed(cfg.training.seed, "top"))
        return top_model(parties, len(cfg.tasks), cfg.model)


def task_weighting(cfg: Config) -> TaskWeighting:
    """The configured combination of the task losses (static, or learned by uncertainty)."""
    return TaskWeighting([t.weight for t in cfg.tasks], cfg.training.loss_weighting == "uncertainty",
                         name="task_weighting")


def _label_matrix(data: FeatureMatrix, tasks: list[str]) -> np.ndarray:
    return np.stack([data.labels[t] for t in tasks], axis=1).astype(np.float32)


def bottom_epoch(trainer: BottomTrainer, batches: Iterable[tuple[tf.Tensor, tf.Tensor]],
                 hand_over: Callable[[tf.Tensor], None],
                 gradient: Callable[[], np.ndarray | tf.Tensor], ahead: int = 0) -> None:
    """One epoch of a bottom: embed each batch (`cats`, `nums`), `hand_over` the embedding, step
    on the `gradient` that comes back.

    While a batch's gradient is awaited there is nothing to do, so the step on one batch and the
    embedding of the next go to TensorFlow as one call (in that order: the next embedding comes
    from the updated bottom, exactly as in sequential training). With `ahead` > 0 it hands over
    that many more batches before it waits for the oldest one's gradient: the label party then
    never waits for this party, at the price of embeddings from a bottom `ahead` steps stale.
    """
    waiting: deque[tuple[tf.Tensor, tf.Tensor]] = deque()  # handed over, awaiting their gradients
    for cats, nums in batches:
        if len(waiting) > ahead:  # step on the oldest batch's gradient (waits for it)
            h = trainer.backward_then_forward(*waiting.popleft(), gradient(), cats, nums)
        else:
            h = trainer.forward(cats, nums)
        hand_over(h)
        waiting.append((cats, nums))
    while waiting:
        trainer.backward(*waiting.popleft(), gradient())


def _decision_table(decision: Decision) -> pa.Table:
    return pa.table({"improved": [decision.improved], "stop": [decision.stop]})


def feature_loop(channel: Channel, trainer: BottomTrainer, train: FeatureMatrix,
                 test: FeatureMatrix, leader: str, plan: Plan, checkpoints: Checkpoints,
                 start_epoch: int = 0, ahead: int = 0) -> None:
    """A feature party's training run from `start_epoch`, then its embeddings of the test rows
    (`ahead`: see `bottom_epoch`).

    After each epoch it embeds the validation rows (with the training noise: they are training
    rows) and follows the label party's decision to keep the weights and to stop. It makes the
    next epoch's batches while the label party scores the validation rows: then nobody waits
    for them.
    """
    best = BestWeights([trainer.bottom])
    if start_epoch:
        best.load(checkpoints.restore(start_epoch, [trainer.bottom], [trainer.optimizer]))
    batches = plan.batch_tensors(start_epoch, train.cats, train.nums)
    for epoch in range(start_epoch, plan.epochs):
        bottom_epoch(trainer, batches,
                     lambda h: channel.send(Kind.EMBEDDING, leader, array_table(h.numpy())),
                     lambda: table_array(channel.recv(Kind.GRADIENT, leader)), ahead)
        for rows in eval_batches(plan.validation):
            h = trainer.forward(train.cats[rows], train.nums[rows])
            channel.send(Kind.VALIDATION_EMBEDDING, leader, array_table(h.numpy()))
        if epoch + 1 < plan.epochs:
            batches = plan.batch_tensors(epoch + 1, train.cats, train.nums)
        decision = Decision(**channel.recv(Kind.EARLY_STOPPING, leader).to_pylist()[0])
        if decision.improved:
            best.keep()
        if decision.stop:
            break
        checkpoints.save(epoch + 1, [trainer.bottom], [trainer.optimizer], best.arrays())
    best.restore()
    for rows in eval_batches(np.arange(len(test))):
        h = trainer.embed(test.cats[rows], test.nums[rows])
        channel.send(Kind.EVAL_EMBEDDING, leader, array_table(h.numpy()))


@dataclass(frozen=True)
class LabelOutcome:
    """What the label party's run yields."""

    history: History
    probabilities: np.ndarray
    leakage: dict[str, dict[str, float]]
    fit_rows: int  # rows fitted per epoch (the training rows less the validation rows)
    trained_at: float  # wall clock when the last epoch ended (before scoring the test rows)


def label_epoch(channel: Channel, trainer: LabelTrainer,
                batches: Iterable[tuple[tf.Tensor, tf.Tensor, tf.Tensor]], followers: list[str],
                audit: LeakageAudit,
                ) -> tuple[list[np.ndarray], tuple[tf.Tensor, tf.Tensor, list[np.ndarray]]]:
    """One epoch of the label party: per batch (`cats`, `nums`, `labels`), wait for every
    embedding, train on the batch and return each feature party its dL/dh
    (`LabelTrainer.train_batch`).

    Returns the per-task losses of each batch, and the last batch's own columns and received
    embeddings (to measure gate use on).
    """
    losses: list[np.ndarray] = []

    def hand_back(grads: list[tf.Tensor]) -> None:  # for the batch the loop is at
        sent = [g.numpy() for g in grads]
        for follower, grad in zip(followers, sent, strict=True):
            channel.send(Kind.GRADIENT, follower, array_table(grad))
        audit.observe(sent, labels.numpy())

    for cats, nums, labels in batches:
        received = [table_array(channel.recv(Kind.EMBEDDING, f)) for f in followers]  # (waits)
        losses.append(trainer.train_batch(cats, nums, received, labels, hand_back).numpy())
    return losses, (cats, nums, received)


def label_loop(channel: Channel, trainer: LabelTrainer, train: FeatureMatrix, test: FeatureMatrix,
               followers: list[str], tasks: list[str], plan: Plan, checkpoints: Checkpoints,
               start_epoch: int = 0) -> LabelOutcome:
    """The label party's training run from `start_epoch`, then its test predictions.

    After each epoch it scores the validation rows, decides on early stopping and tells every
    party. It makes the next epoch's batches while the feature parties finish their epoch and
    embed the validation rows. The leakage audit covers the gradients it sent in the last epoch
    run.
    """
    labels = _label_matrix(train, tasks)
    history, best = History(), BestWeights(trainer.models)
    if start_epoch:
        saved = checkpoints.restore(start_epoch, best.models, [trainer.optimizer])
        history = History.from_arrays(saved)
        best.load(saved)
    batches = plan.batch_tensors(start_epoch, train.cats, train.nums, labels)
    for epoch in range(start_epoch, plan.epochs):
        started, audit = time.perf_counter(), LeakageAudit(tasks, plan.seed)
        losses, (cats, nums, last) = label_epoch(channel, trainer, batches, followers, audit)
        if epoch + 1 < plan.epochs:
            batches = plan.batch_tensors(epoch + 1, train.cats, train.nums, labels)
        val_auc = []
        if len(plan.validation):
            val_auc = auc_per_task(labels[plan.validation],
                                   _predict(channel, trainer, train, plan.validation, followers,
                                            Kind.VALIDATION_EMBEDDING))
        history.record(losses, val_auc,
                       trainer.gate_usage(cats, nums, last).numpy(),
                       trainer.weighting.effective_weights().numpy(), started)
        decision = history.decide(plan.patience, last_epoch=epoch == plan.epochs - 1)
        for follower in followers:
            channel.send(Kind.EARLY_STOPPING, follower, _decision_table(decision))
        if decision.improved:
            best.keep()
        if decision.stop:
            break
        checkpoints.save(epoch + 1, best.models, [trainer.optimizer], history.arrays() | best.arrays())
    trained_at = time.time()
    best.restore()
    probabilities = _predict(channel, trainer, test, np.arange(len(test)), followers,
                             Kind.EVAL_EMBEDDING)
    return LabelOutcome(history, probabilities, audit.report(), len(plan.fit), trained_at)


def _predict(channel: Channel, trainer: LabelTrainer, data: FeatureMatrix, rows: np.ndarray,
             followers: list[str], kind: Kind) -> np.ndarray:
    """Probabilities `[rows, tasks]` from our columns and the followers' embeddings of `kind`."""
    predicted = [np.zeros((0, trainer.top.outputs[0].shape[1]), np.float32)]
    for chunk in eval_batches(rows):
        received = [table_array(channel.recv(kind, f)) for f in followers]
        predicted.append(trainer.predict(data.cats[chunk], data.nums[chunk], received).numpy())
    return np.concatenate(predicted)


@dataclass(frozen=True)
class _Run:
    """What central training starts from: each party's matrices, the same freshly seeded models
    as split training, and the plan of epochs."""

    train: dict[str, FeatureMatrix]
    test: dict[str, FeatureMatrix]
    bottoms: dict[str, keras.Model]
    top: keras.Model
    plan: Plan

    @classmethod
    def load(cls, cfg: Config, features: dict[str, PartyFeatures]) -> _Run:
        order = party_order(cfg, features)
        train = {p: FeatureMatrix.read(features[p].train) for p in order}
        return cls(train, {p: FeatureMatrix.read(features[p].test) for p in order},
                   {p: build_bottom(cfg, p, Transform.load(features[p].transform)) for p in order},
                   build_top(cfg, order), Plan.of(cfg.training, len(train[cfg.label_party])))


@dataclass(frozen=True)
class PartyOutcome:
    """What one party's part of split training yields."""

    models: dict[str, Path]       # "bottom", and for the label party "top"
    ready_at: float               # wall clock when its steps were traced (and, with XLA, compiled)
    sent: dict[str, dict[str, int]]  # its channel's counts (all parties' on a shared hub)
    label: LabelOutcome | None = None


@dataclass(frozen=True)
class PartyJob:
    """One party's whole part of split training, from its own files only: build and trace its
    models, resume from its own checkpoint, train, save. Picklable, so it can run in a process
    of its own."""

    party: str
    cfg: Config
    files: PartyFeatures
    out_dir: Path
    run_id: str
    start_epoch: int

    def __call__(self, channel: Channel) -> PartyOutcome:
        set_op_threads(self.cfg.training.xla, side_by_side=self.cfg.training.embed_ahead > 0)
        cfg, label = self.cfg, self.cfg.label_party
        train, test = FeatureMatrix.read(self.files.train), FeatureMatrix.read(self.files.test)
        plan = Plan.of(cfg.training, len(train))
        rate = plan.learning_rate(cfg.training)
        models = {"bottom": build_bottom(cfg, self.party, Transform.load(self.files.transform))}
        checkpoints = Checkpoints(self.out_dir / "checkpoints" / self.run_id)
        noise_seed = private_seed("noise", self.party)
        if self.party == label:
            followers = [p.name for p in cfg.feature_parties]
            models["top"] = build_top(cfg, [label, *followers])
            labeller = LabelTrainer(models["bottom"], models["top"], task_weighting(cfg), rate,
                                    cfg.privacy.gradient_noise, cfg.training.xla,
                                    fused=cfg.training.embed_ahead > 0, noise_seed=noise_seed)
            labeller.trace(plan.batch_sizes)
            ready_at = time.time()
            outcome = label_loop(channel, labeller, train, test, followers,
                                 [t.name for t in cfg.tasks], plan, checkpoints, self.start_epoch)
        else:
            trainer = BottomTrainer(models["bottom"], rate, cfg.privacy.embedding_noise,
                                    cfg.training.xla, noise_seed)
            trainer.trace(plan.batch_sizes)
            ready_at, outcome = time.time(), None
            feature_loop(channel, trainer, train, test, label, plan, checkpoints, self.start_epoch,
                         cfg.training.embed_ahead)
        saved = {name: _save(model, self.out_dir / f"{name}.keras") for name, model in models.items()}
        return PartyOutcome(saved, ready_at, channel.stats().as_dict(), outcome)


def _finish(cfg: Config, fit_rows: int, label_test: Path, probabilities: np.ndarray, history: History,
            startup_s: float, seconds: float, resumed_after_epoch: int, models: dict[str, Path],
            channel: dict[str, dict[str, int]], leakage: dict[str, dict[str, float]],
            out_dir: Path) -> TrainResult:
    """Write test predictions (in common-position order) and the training history."""
    tasks = [t.name for t in cfg.tasks]
    columns = {"position": FeatureMatrix.positions(label_test)}
    columns |= {f"p:{t}": probabilities[:, j] for j, t in enumerate(tasks)}
    epochs_run = len(history.seconds)
    return TrainResult(
        models=models,
        predictions=write_parquet(pa.table(columns), out_dir / "predictions.parquet"),
        history=write_json(history.as_json(tasks), out_dir / "history.json"),
        rows_per_s=(epochs_run - resumed_after_epoch) * fit_rows / seconds,
        startup_s=startup_s,
        epochs_run=epochs_run,
        best_epoch=history.best_epoch,
        channel=channel,
        leakage=leakage,
        resumed_after_epoch=resumed_after_epoch,
    )


def _save(model: keras.Model, path: Path) -> Path:
    with atomic_path(path) as tmp:
        model.save(tmp)
    return path


def train_split_local(cfg: Config, features: dict[str, PartyFeatures], out_dirs: dict[str, Path],
                      hub: LocalHub | None = None) -> TrainResult:
    """Train the split MMoE with every party on this machine: each on its own thread over a
    `LocalHub` (`hub`, if given), or with `training.parties_in = "processes"` each in its own
    process.

    `features[party]` names that party's train, test and transform files; each party's model
    is written to `out_dirs[party]`, and the label party's test predictions beside its model.
    """
    label = cfg.label_party
    # Resume from the last epoch every party has checkpointed for these exact inputs (the last
    # epoch is always rerun: it feeds the leakage audit)
    run_id = fingerprint(cfg.model_dump(mode="json"),
                         [path for files in features.values() for path in files.paths])
    checkpoints = [Checkpoints(out_dirs[p] / "checkpoints" / run_id) for p in features]
    start_epoch = common_epoch(checkpoints, cfg.training.epochs - 1)
    jobs = {p: PartyJob(p, cfg, features[p], out_dirs[p], run_id, start_epoch) for p in features}

    started = time.time()
    if cfg.training.parties_in == "processes":
        if hub is not None:
            raise ValueError("a LocalHub carries parties on threads, not in processes")
        outcomes = run_in_processes(jobs)
        channel = ChannelStats.merge(*(o.sent for o in outcomes.values()))
    else:
        hub = hub or LocalHub()
        outcomes = hub.run({p: partial(job, hub.channel(p)) for p, job in jobs.items()})
        channel = hub.stats().as_dict()
    ready = max(o.ready_at for o in outcomes.values())
    result = outcomes[label].label
    assert result is not None  # the label party's job always returns its outcome
    models = {p: o.models["bottom"] for p, o in outcomes.items()} | {"top": outcomes[label].models["top"]}
    trained = _finish(cfg, result.fit_rows, features[label].test, result.probabilities,
                      result.history, ready - started, result.trained_at - ready, start_epoch,
                      models, channel, result.leakage, out_dirs[label])
    for party in checkpoints:
        party.clear()
    return trained


def train_central(cfg: Config, features: dict[str, PartyFeatures], out_dir: Path) -> TrainResult:
    """Train the same composed model in one place on the columns of the parties in `features`,
    with the same plan: fitting rows, batch order, validation rows and early stopping.

    With every party it is the pooled-data baseline; with the label party alone, what the label
    party could do without federating (the baseline for the federation lift).
    """
    set_op_threads(cfg.training.xla)
    run = _Run.load(cfg, features)
    label, plan = cfg.label_party, run.plan
    trainer = CentralTrainer(run.bottoms, run.top, task_weighting(cfg), plan.learning_rate(cfg.training),
                             cfg.training.xla)

    def inputs(data: dict[str, FeatureMatrix]) -> list[np.ndarray]:
        return [m for p in run.bottoms for m in (data[p].cats, data[p].nums)]

    def probabilities(data: dict[str, FeatureMatrix], rows: np.ndarray) -> np.ndarray:
        predicted = (trainer.predict([m[chunk] for m in inputs(data)]).numpy()
                     for chunk in eval_batches(rows))
        return np.concatenate([np.zeros((0, len(cfg.tasks)), np.float32), *predicted])

    labels = _label_matrix(run.train[label], [t.name for t in cfg.tasks])
    history, best = History(), BestWeights(trainer.models)
    start_all = time.perf_counter()
    trainer.trace(plan.batch_sizes)
    startup_s, start_all = time.perf_counter() - start_all, time.perf_counter()
    for epoch in range(plan.epochs):
        start, losses = time.perf_counter(), []
        for *batch, batch_labels in plan.batch_tensors(epoch, *inputs(run.train), labels):
            losses.append(trainer.step(batch, batch_labels).numpy())
        val_auc = (auc_per_task(labels[plan.validation], probabilities(run.train, plan.validation))
                   if len(plan.validation) else [])
        history.record(losses, val_auc, trainer.gate_usage(batch).numpy(),
                       trainer.weighting.effective_weights().numpy(), start)
        decision = history.decide(plan.patience, last_epoch=epoch == plan.epochs - 1)
        if decision.improved:
            best.keep()
        if decision.stop:
            break
    best.restore()
    seconds = time.perf_counter() - start_all
    test = probabilities(run.test, np.arange(len(run.test[label])))
    return _finish(cfg, len(plan.fit), features[label].test, test, history, startup_s, seconds, 0,
                   {"pooled": _save(trainer.model, out_dir / "model.keras")}, {}, {}, out_dir)
