"""Split training: each party steps its own bottom; the label party steps the MMoE top.

Per batch a feature party sends h_p (after optional clipping and noise); the label party computes
the multi-task loss, steps its own variables and returns dL/dh_p (optionally noised); the feature
party applies `tape.gradient(h_p, vars, output_gradients=g)`. Batch order comes from a seed every
party shares, so no row indices travel. `train_central` trains the same composed model in one
place, for the comparison a federation must win.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import keras
import numpy as np
import pyarrow as pa
import tensorflow as tf

from splitrec_core.channel import Channel, Kind, LocalHub, array_table, table_array
from splitrec_core.checkpoint import Checkpoints, common_epoch, fingerprint
from splitrec_core.config import Config, PrivacyConfig
from splitrec_core.features import FeatureMatrix, Transform
from splitrec_core.io import atomic_path, write_json, write_parquet
from splitrec_core.model import TaskWeighting, bottom_model, composed_model, task_losses, top_model
from splitrec_core.privacy import LeakageAudit

EVAL_BATCH = 8192


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> Iterator[np.ndarray]:
    """The row indices of each batch of an epoch; every party derives the same ones."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def eval_batches(n: int) -> Iterator[np.ndarray]:
    """Consecutive row ranges for scoring."""
    for start in range(0, n, EVAL_BATCH):
        yield np.arange(start, min(n, start + EVAL_BATCH))


def build_models(cfg: Config, transforms: dict[str, Transform]) -> tuple[dict[str, keras.Model], keras.Model]:
    """A bottom per party in `transforms` (label party first) and a top over them, seeded."""
    keras.utils.set_random_seed(cfg.training.seed)
    order = [p for p in [cfg.label_party, *(p.name for p in cfg.feature_parties)] if p in transforms]
    bottoms = {
        name: bottom_model(name, transforms[name].vocab_sizes(), len(transforms[name].numeric),
                           cfg.model, cfg.privacy.clip_norm)
        for name in order
    }
    return bottoms, top_model(order, len(cfg.tasks), cfg.model)


def task_weighting(cfg: Config) -> TaskWeighting:
    """The configured combination of the task losses (static, or learned by uncertainty)."""
    return TaskWeighting([t.weight for t in cfg.tasks], cfg.training.loss_weighting == "uncertainty",
                         name="task_weighting")


class FeaturePartyTrainer:
    """A feature party's bottom and optimizer; it sees only its own columns and the gradients."""

    def __init__(self, bottom: keras.Model, learning_rate: float, privacy: PrivacyConfig) -> None:
        self.bottom = bottom
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self.privacy = privacy
        self._noise = tf.random.Generator.from_non_deterministic_state()

    @tf.function(reduce_retracing=True)
    def forward(self, cats: tf.Tensor, nums: tf.Tensor) -> tf.Tensor:
        """The embedding to send (clipped inside the bottom), plus Gaussian noise if configured."""
        h = self.bottom([cats, nums], training=True)
        if self.privacy.embedding_noise > 0:
            h += self._noise.normal(tf.shape(h), stddev=self.privacy.embedding_noise)
        return h

    @tf.function(reduce_retracing=True)
    def backward(self, cats: tf.Tensor, nums: tf.Tensor, grad: tf.Tensor) -> None:
        """Back-propagate the received dL/dh through the bottom and step it."""
        with tf.GradientTape() as tape:
            h = self.bottom([cats, nums], training=True)
        variables = self.bottom.trainable_variables
        self.optimizer.apply(tape.gradient(h, variables, output_gradients=grad), variables)

    @tf.function(reduce_retracing=True)
    def backward_then_forward(self, cats: tf.Tensor, nums: tf.Tensor, grad: tf.Tensor,
                              next_cats: tf.Tensor, next_nums: tf.Tensor) -> tf.Tensor:
        """Step on one batch's gradient, then embed the next batch with the updated bottom."""
        self.backward(cats, nums, grad)
        return self.forward(next_cats, next_nums)

    @tf.function(reduce_retracing=True)
    def embed(self, cats: tf.Tensor, nums: tf.Tensor) -> tf.Tensor:
        """The embedding for scoring: no noise."""
        return self.bottom([cats, nums], training=False)


class LabelPartyTrainer:
    """The label party's bottom, the MMoE top, the task weighting and one optimizer over them."""

    def __init__(self, bottom: keras.Model, top: keras.Model, weighting: TaskWeighting,
                 learning_rate: float, privacy: PrivacyConfig) -> None:
        self.bottom = bottom
        self.top = top
        self.weighting = weighting
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self.privacy = privacy
        self._noise = tf.random.Generator.from_non_deterministic_state()

    @property
    def models(self) -> list[keras.Layer]:
        """What the label party trains (and checkpoints): its bottom, the top, the task weighting."""
        return [self.bottom, self.top, self.weighting]

    @property
    def variables(self) -> list[tf.Variable]:
        """Trainable variables of the bottom, the top and (if learned) the task weighting."""
        return [v for model in self.models for v in model.trainable_variables]

    def loss_and_gradients(self, cats: tf.Tensor, nums: tf.Tensor, labels: tf.Tensor,
                           received: list[tf.Tensor]) -> tuple[tf.Tensor, list[tf.Tensor], list[tf.Tensor]]:
        """Per-task losses, gradients for our variables, and dL/dh for each received embedding."""
        with tf.GradientTape() as tape:
            tape.watch(received)
            h_own = self.bottom([cats, nums], training=True)
            per_task = task_losses(labels, self.top([h_own, *received], training=True))
            loss = self.weighting(per_task)
        grads = tape.gradient(loss, [*self.variables, *received])
        n = len(self.variables)
        return per_task, grads[:n], grads[n:]

    @tf.function(reduce_retracing=True)
    def step(self, cats: tf.Tensor, nums: tf.Tensor, labels: tf.Tensor,
             received: list[tf.Tensor]) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """Step our variables; return per-task losses and the (optionally noised) gradients to send."""
        loss, grads, to_send = self.loss_and_gradients(cats, nums, labels, received)
        self.optimizer.apply(grads, self.variables)
        if self.privacy.gradient_noise > 0:
            to_send = [g + self._noise.normal(tf.shape(g), stddev=self.privacy.gradient_noise)
                       for g in to_send]
        return loss, to_send

    @tf.function(reduce_retracing=True)
    def gate_usage(self, cats: tf.Tensor, nums: tf.Tensor, received: list[tf.Tensor]) -> tf.Tensor:
        """Each task's mean gate weight per expert on these rows, `[num_tasks, num_experts]`."""
        h = tf.concat([self.bottom([cats, nums], training=False), *received], axis=1)
        return tf.reduce_mean(self.top.get_layer("mmoe").gate_weights(h), axis=1)

    @tf.function(reduce_retracing=True)
    def predict(self, cats: tf.Tensor, nums: tf.Tensor, received: list[tf.Tensor]) -> tf.Tensor:
        """Probabilities `[batch, num_tasks]`."""
        h_own = self.bottom([cats, nums], training=False)
        return tf.sigmoid(self.top([h_own, *received], training=False))


def _label_matrix(data: FeatureMatrix, tasks: list[str]) -> np.ndarray:
    return np.stack([data.labels[t] for t in tasks], axis=1).astype(np.float32)


def feature_loop(channel: Channel, trainer: FeaturePartyTrainer, train: FeatureMatrix,
                 test: FeatureMatrix, leader: str, epochs: int, batch_size: int, seed: int,
                 start_epoch: int = 0, checkpoints: Checkpoints | None = None) -> None:
    """A feature party's training run from `start_epoch`, then its embeddings of the test rows.

    While it waits for a batch's gradient it has nothing to do, so each batch's backward pass
    and the next batch's forward pass go to TensorFlow as one call (in that order: the next
    embedding comes from the updated bottom, exactly as in sequential training).
    """
    def save(epoch: int) -> None:
        if checkpoints:
            checkpoints.save(epoch + 1, [trainer.bottom], trainer.optimizer)

    waiting: tuple[int, np.ndarray, np.ndarray] | None = None  # a sent batch awaiting its gradient
    for epoch in range(start_epoch, epochs):
        for rows in epoch_batches(len(train), batch_size, seed, epoch):
            cats, nums = train.cats[rows], train.nums[rows]
            if waiting is None:
                h = trainer.forward(cats, nums)
            else:
                grad = table_array(channel.recv(Kind.GRADIENT, leader))
                h = trainer.backward_then_forward(waiting[1], waiting[2], grad, cats, nums)
                if waiting[0] != epoch:
                    save(waiting[0])
            channel.send(Kind.EMBEDDING, leader, array_table(h.numpy()))
            waiting = (epoch, cats, nums)
    if waiting is not None:
        trainer.backward(waiting[1], waiting[2], table_array(channel.recv(Kind.GRADIENT, leader)))
        save(waiting[0])
    for rows in eval_batches(len(test)):
        h = trainer.embed(test.cats[rows], test.nums[rows])
        channel.send(Kind.EVAL_EMBEDDING, leader, array_table(h.numpy()))


@dataclass
class History:
    """Per epoch: loss per task, each task's mean gate weight per expert, and wall time."""

    task_loss: list[list[float]] = field(default_factory=list)   # [epoch][task]
    gates: list[list[list[float]]] = field(default_factory=list)  # [epoch][task][expert]
    task_weight: list[list[float]] = field(default_factory=list)  # [epoch][task]
    seconds: list[float] = field(default_factory=list)

    def record(self, losses: list[np.ndarray], gates: np.ndarray, task_weights: np.ndarray,
               started: float) -> None:
        """Close an epoch that began at `time.perf_counter()` value `started`."""
        self.task_loss.append(np.mean(losses, axis=0).tolist())
        self.gates.append(np.asarray(gates).tolist())
        self.task_weight.append(np.asarray(task_weights).tolist())
        self.seconds.append(time.perf_counter() - started)

    def arrays(self) -> dict[str, np.ndarray]:
        """The history as arrays, for a checkpoint."""
        return {"task_loss": np.array(self.task_loss), "gates": np.array(self.gates),
                "task_weight": np.array(self.task_weight), "seconds": np.array(self.seconds)}

    @classmethod
    def from_arrays(cls, saved: dict[str, np.ndarray]) -> History:
        """Inverse of `arrays`."""
        return cls(saved["task_loss"].tolist(), saved["gates"].tolist(),
                   saved["task_weight"].tolist(), saved["seconds"].tolist())

    def as_json(self, tasks: list[str]) -> dict[str, object]:
        """Loss curves per task, task weights, gate use per task (mean weight per expert, entropy)."""
        losses = np.array(self.task_loss).reshape(-1, len(tasks))
        weights = np.array(self.task_weight).reshape(-1, len(tasks))
        gates = np.array(self.gates).reshape(len(self.gates), len(tasks), -1)
        entropy = -np.sum(gates * np.log(np.clip(gates, 1e-12, None)), axis=2)
        return {
            "loss": np.sum(losses * weights, axis=1).tolist(),
            "task_loss": {t: losses[:, j].tolist() for j, t in enumerate(tasks)},
            "task_weight": {t: weights[:, j].tolist() for j, t in enumerate(tasks)},
            "gate_mean": {t: gates[:, j].tolist() for j, t in enumerate(tasks)},
            "gate_entropy": {t: entropy[:, j].tolist() for j, t in enumerate(tasks)},
            "seconds": self.seconds,
        }


def label_loop(channel: Channel, trainer: LabelPartyTrainer, train: FeatureMatrix,
               test: FeatureMatrix, followers: list[str], tasks: list[str], epochs: int,
               batch_size: int, seed: int, start_epoch: int = 0,
               checkpoints: Checkpoints | None = None, history: History | None = None,
               ) -> tuple[History, np.ndarray, dict[str, dict[str, float]]]:
    """The label party's training run from `start_epoch` (with the `history` so far).

    Returns its history, the test probabilities and the leakage audit of the gradients it sent
    in the last epoch.
    """
    labels = _label_matrix(train, tasks)
    history, audit = history or History(), LeakageAudit(tasks, seed)
    for epoch in range(start_epoch, epochs):
        start, losses = time.perf_counter(), []
        for rows in epoch_batches(len(train), batch_size, seed, epoch):
            received = [table_array(channel.recv(Kind.EMBEDDING, f)) for f in followers]
            loss, grads = trainer.step(train.cats[rows], train.nums[rows], labels[rows], received)
            sent = [grad.numpy() for grad in grads]
            for follower, grad in zip(followers, sent, strict=True):
                channel.send(Kind.GRADIENT, follower, array_table(grad))
            if epoch == epochs - 1:
                audit.observe(sent, labels[rows])
            losses.append(loss.numpy())
        # gate use measured on the epoch's last batch, with the weights the epoch ended with
        gates = trainer.gate_usage(train.cats[rows], train.nums[rows], received).numpy()
        history.record(losses, gates, trainer.weighting.effective_weights().numpy(), start)
        if checkpoints:
            checkpoints.save(epoch + 1, trainer.models, trainer.optimizer, history.arrays())
    probabilities = []
    for rows in eval_batches(len(test)):
        received = [table_array(channel.recv(Kind.EVAL_EMBEDDING, f)) for f in followers]
        probabilities.append(trainer.predict(test.cats[rows], test.nums[rows], received).numpy())
    predicted = np.concatenate(probabilities) if probabilities else np.zeros((0, len(tasks)))
    return history, predicted, audit.report()


@dataclass(frozen=True)
class TrainResult:
    """What training wrote and measured."""

    models: dict[str, Path]
    predictions: Path
    history: Path
    rows_per_s: float
    channel: dict[str, dict[str, int]]
    leakage: dict[str, dict[str, float]]
    resumed_after_epoch: int = 0


@dataclass(frozen=True)
class _Run:
    """Everything both trainers start from: each party's matrices and freshly seeded models."""

    train: dict[str, FeatureMatrix]
    test: dict[str, FeatureMatrix]
    bottoms: dict[str, keras.Model]
    top: keras.Model

    @classmethod
    def load(cls, cfg: Config, features: dict[str, dict[str, Path]]) -> _Run:
        transforms = {p: Transform.load(f["transform"]) for p, f in features.items()}
        return cls({p: FeatureMatrix.read(f["train"]) for p, f in features.items()},
                   {p: FeatureMatrix.read(f["test"]) for p, f in features.items()},
                   *build_models(cfg, transforms))


def _finish(cfg: Config, label_test: Path, probabilities: np.ndarray, history: History,
            rows_per_s: float, models: dict[str, Path], channel: dict[str, dict[str, int]],
            leakage: dict[str, dict[str, float]], out_dir: Path) -> TrainResult:
    """Write test predictions (in common-position order) and the training history."""
    tasks = [t.name for t in cfg.tasks]
    columns = {"position": FeatureMatrix.positions(label_test)}
    columns |= {f"p:{t}": probabilities[:, j] for j, t in enumerate(tasks)}
    return TrainResult(
        models=models,
        predictions=write_parquet(pa.table(columns), out_dir / "predictions.parquet"),
        history=write_json(history.as_json(tasks),
                           out_dir / "history.json"),
        rows_per_s=rows_per_s,
        channel=channel,
        leakage=leakage,
    )


def _save(model: keras.Model, path: Path) -> Path:
    with atomic_path(path) as tmp:
        model.save(tmp)
    return path


def train_split_local(cfg: Config, features: dict[str, dict[str, Path]], out_dirs: dict[str, Path],
                      hub: LocalHub | None = None) -> TrainResult:
    """Train the split MMoE with every party on its own thread over a `LocalHub`.

    `features[party]` names that party's `train`, `test` and `transform` files; each party's model
    is written to `out_dirs[party]`, and the label party's test predictions beside its model.
    """
    hub = hub or LocalHub()
    run = _Run.load(cfg, features)
    label, followers = cfg.label_party, [p.name for p in cfg.feature_parties]
    t = cfg.training
    label_trainer = LabelPartyTrainer(run.bottoms[label], run.top, task_weighting(cfg),
                                      t.learning_rate, cfg.privacy)
    feature_trainers = {f: FeaturePartyTrainer(run.bottoms[f], t.learning_rate, cfg.privacy)
                        for f in followers}

    # Resume from the last epoch every party has checkpointed for these exact inputs (the last
    # epoch is always rerun: it feeds the leakage audit)
    run_id = fingerprint(cfg.model_dump(mode="json"),
                         [path for files in features.values() for path in files.values()])
    checkpoints = {p: Checkpoints(out_dirs[p] / "checkpoints" / run_id) for p in features}
    start_epoch, history = common_epoch(list(checkpoints.values()), t.epochs - 1), History()
    if start_epoch:
        saved = checkpoints[label].restore(start_epoch, label_trainer.models,
                                           label_trainer.optimizer)
        history = History.from_arrays(saved)
        for f, trainer in feature_trainers.items():
            checkpoints[f].restore(start_epoch, [trainer.bottom], trainer.optimizer)

    jobs: dict[str, Callable[[], object]] = {
        label: partial(label_loop, hub.channel(label), label_trainer, run.train[label],
                       run.test[label], followers, [w.name for w in cfg.tasks], t.epochs,
                       t.batch_size, t.seed, start_epoch, checkpoints[label], history),
    }
    for f, trainer in feature_trainers.items():
        jobs[f] = partial(feature_loop, hub.channel(f), trainer, run.train[f], run.test[f], label,
                          t.epochs, t.batch_size, t.seed, start_epoch, checkpoints[f])
    start = time.perf_counter()
    history, probabilities, leakage = hub.run(jobs)[label]  # type: ignore[misc]
    rows_per_s = (t.epochs - start_epoch) * len(run.train[label]) / (time.perf_counter() - start)
    models = {p: _save(run.bottoms[p], out_dirs[p] / "bottom.keras") for p in run.bottoms}
    models["top"] = _save(run.top, out_dirs[label] / "top.keras")
    result = _finish(cfg, features[label]["test"], probabilities, history, rows_per_s, models,
                     hub.stats().as_dict(), leakage, out_dirs[label])
    for party in checkpoints.values():
        party.clear()
    return replace(result, resumed_after_epoch=start_epoch)


def train_central(cfg: Config, features: dict[str, dict[str, Path]], out_dir: Path) -> TrainResult:
    """Train the same composed model in one place on the columns of the parties in `features`.

    With every party it is the pooled-data baseline; with the label party alone, what the label
    party could do without federating (the baseline for the federation lift).
    """
    run = _Run.load(cfg, features)
    model = composed_model(run.bottoms, run.top)
    weighting = task_weighting(cfg)
    trained = [*model.trainable_variables, *weighting.trainable_variables]
    optimizer = keras.optimizers.Adam(cfg.training.learning_rate)
    label = cfg.label_party

    def inputs(data: dict[str, FeatureMatrix], rows: np.ndarray) -> list[np.ndarray]:
        return [m for p in run.bottoms for m in (data[p].cats[rows], data[p].nums[rows])]

    @tf.function(reduce_retracing=True)
    def step(x: list[tf.Tensor], y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            per_task = task_losses(y, model(x, training=True))
            loss = weighting(per_task)
        optimizer.apply(tape.gradient(loss, trained), trained)
        return per_task

    @tf.function(reduce_retracing=True)
    def gate_usage(x: list[tf.Tensor]) -> tf.Tensor:
        h = tf.concat([b(x[2 * i : 2 * i + 2], training=False)
                       for i, b in enumerate(run.bottoms.values())], axis=1)
        return tf.reduce_mean(run.top.get_layer("mmoe").gate_weights(h), axis=1)

    labels = _label_matrix(run.train[label], [t.name for t in cfg.tasks])
    history, t = History(), cfg.training
    start_all = time.perf_counter()
    for epoch in range(t.epochs):
        start, losses = time.perf_counter(), []
        for rows in epoch_batches(len(labels), t.batch_size, t.seed, epoch):
            losses.append(step(inputs(run.train, rows), labels[rows]).numpy())
        history.record(losses, gate_usage(inputs(run.train, rows)).numpy(),
                       weighting.effective_weights().numpy(), start)
    rows_per_s = t.epochs * len(labels) / (time.perf_counter() - start_all)
    predict = tf.function(lambda x: tf.sigmoid(model(x, training=False)), reduce_retracing=True)
    probabilities = np.concatenate(
        [predict(inputs(run.test, rows)).numpy() for rows in eval_batches(len(run.test[label]))])
    return _finish(cfg, features[label]["test"], probabilities, history, rows_per_s,
                   {"pooled": _save(model, out_dir / "model.keras")}, {}, {}, out_dir)
