"""The label party's part of split training.

Per batch, it takes every feature party's embedding, trains its own bottom and the MMoE top, and
returns each feature party its gradient; after each epoch it scores the validation rows and
decides for everyone whether to keep the weights and to stop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

import numpy as np
import tensorflow as tf

from splitrec_core.channel import Channel, Kind
from splitrec_core.channel.expect import Due, check_array
from splitrec_core.cpu import process_cpu_s
from splitrec_core.features import FeatureMatrix
from splitrec_core.privacy.leakage import LeakageAudit
from splitrec_core.training.epochs import EVAL_BATCH, BestWeights, History, auc_per_task
from splitrec_core.training.event_matrix import EventMatrix, Spread, spread_of
from splitrec_core.training.local_updates import LocalUpdates, take_stepping
from splitrec_core.training.runs import LoopSettings
from splitrec_core.training.steps import LabelTrainer
from splitrec_core.training.streaming import StreamedFeatures
from splitrec_core.training.wire import BatchesIn, BatchesOut, Wire, unpacked

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelOutcome:
    """What the label party's run yields."""

    history: History
    probabilities: np.ndarray
    leakage: dict[str, dict[str, float]]
    fit_rows: int  # rows fitted per epoch (the training rows less the validation rows)
    trained_at: float  # wall clock when the last epoch ended (before scoring the test rows)
    trained_cpu_s: float  # its process's CPU seconds then (`process_cpu_s`)
    activity_auc: float | None = None  # with events: the activity attack (`LeakageAudit`)


def label_epoch(trainer: LabelTrainer, batches: Iterable[tuple[tf.Tensor, ...]],
                embeddings: list[BatchesIn], gradients: list[BatchesOut], audit: LeakageAudit,
                local: LocalUpdates | None = None,
                ) -> tuple[list[np.ndarray], tuple[tf.Tensor, tf.Tensor, list[np.ndarray]]]:
    """One epoch of the label party, ending with the outboxes flushed.

    Per batch (`cats`, `nums`, `labels`, and with events each event's person in the batch), it
    takes every feature party's embedding of the batch's people from its inbox, trains on the
    batch (with events, each person's embedding spread to its events) and puts each feature
    party's dL/dh per person, noised (`LabelTrainer.noised`), in its outbox. The audit sees each
    gradient as its feature party unpacks it (float16 or int8 rounding included), so its figures
    are those of what crosses, against whether each person has a positive event. With `local`
    updates it steps on cached batches while it waits for embeddings (`local_updates`); a batch
    joins the workset with its rows as trained on (with events, one per event) and the
    gradients computed for them before noise.

    Returns the per-task losses of each batch, and the last batch's own columns and received
    embeddings (to measure gate use on).
    """
    losses: list[np.ndarray] = []
    computed: list[tf.Tensor] = []  # the batch's dL/dh per row trained on, before noise

    def hand_back(grads: list[tf.Tensor]) -> None:  # for the batch the loop is at
        computed[:] = grads
        delivered = []
        for outbox, grad in zip(gradients, grads, strict=True):
            sent = trainer.noised(spread.to_people(grad)).numpy()
            outbox.put(sent)
            delivered.append(np.asarray(outbox.wire.as_received(sent)))
        audit.observe(delivered, spread.labels_of_people(labels.numpy()),
                      spread.events_per_person())

    for cats, nums, labels, *events in batches:
        spread = Spread.of(events[0]) if events else Spread(len(labels))
        received = [spread.to_events(take_stepping(inbox, spread.people, local))  # (waits)
                    for inbox in embeddings]
        losses.append(trainer.train_batch(cats, nums, received, labels, hand_back).numpy())
        if local is not None:
            local.workset.add(cats, nums, received, labels, list(computed))
    for outbox in gradients:
        outbox.flush()
    for inbox in embeddings:
        inbox.end_epoch()
    return losses, (cats, nums, received)


def label_loop(channel: Channel, trainer: LabelTrainer, run: LoopSettings, *,
               followers: list[str], tasks: list[str]) -> LabelOutcome:
    """The label party's training run from `run.start_epoch`, then its test predictions.

    It trains on `tasks` with the embeddings of every party in `followers`, and returns their
    gradients `run.per_message` training batches a message. After each epoch it scores the
    validation rows, decides on early stopping and tells every party. It makes the next epoch's
    batches while the feature parties finish their epoch and embed the validation rows. The
    leakage audit covers the gradients it sent in the last epoch run.
    """
    plan, wire, checkpoints = run.plan, run.wire, run.checkpoints
    history, best = History(), BestWeights(trainer.models)
    if run.start_epoch:
        saved = checkpoints.restore(run.start_epoch, best.models, [trainer.optimizer])
        history = History.from_arrays(saved)
        best.load(saved)
    batches = run.train.batches(plan, run.start_epoch, tasks)
    validation = run.train.take(plan.validation)
    embeddings = [BatchesIn(channel, Kind.EMBEDDING, f, width, wire, run.per_message)
                  for f, width in _cut_widths(trainer, followers).items()]
    gradients = [BatchesOut(partial(channel.send, Kind.GRADIENT, f), wire, run.per_message)
                 for f in followers]
    local = LocalUpdates.of(run.local, plan.seed, trainer.local_step)
    for epoch in range(run.start_epoch, plan.epochs):
        started, audit = time.perf_counter(), LeakageAudit(tasks, plan.seed)
        losses, (cats, nums, last) = label_epoch(trainer, batches, embeddings, gradients, audit,
                                                 local)
        if epoch + 1 < plan.epochs:
            batches = run.train.batches(plan, epoch + 1, tasks)
        val_auc = _validation_auc(channel, trainer, validation, followers, tasks, wire)
        history.record(losses, val_auc, trainer.gate_usage(cats, nums, last).numpy(),
                       trainer.weighting.effective_weights().numpy(), started,
                       local.counted() if local else 0)
        decision = history.decide(plan.patience, last_epoch=epoch == plan.epochs - 1)
        _log.info("%s%s", history.last_epoch_line(tasks, len(plan.fit)),
                  " (best so far)" if decision.improved else "",
                  extra={"epoch": len(history.seconds), "epochs": plan.epochs})
        for follower in followers:
            channel.send(Kind.EARLY_STOPPING, follower, decision.as_table())
        if decision.improved:
            best.keep()
        if decision.stop:
            break
        checkpoints.save(epoch + 1, best.models, [trainer.optimizer],
                         history.arrays() | best.arrays())
    trained_at, trained_cpu_s = time.time(), process_cpu_s()
    best.restore()
    probabilities = _predict(channel, trainer, run.test, followers, Kind.EVAL_EMBEDDING, wire)
    return LabelOutcome(history, probabilities, audit.report(), len(plan.fit), trained_at,
                        trained_cpu_s, audit.activity_auc())


def _validation_auc(channel: Channel, trainer: LabelTrainer,
                    validation: FeatureMatrix | EventMatrix, followers: list[str],
                    tasks: list[str], wire: Wire) -> list[float]:
    """Per task, the validation rows' AUC (none without validation rows)."""
    if not len(validation):
        return []
    return auc_per_task(validation.task_labels(tasks),
                        _predict(channel, trainer, validation, followers,
                                 Kind.VALIDATION_EMBEDDING, wire))


def _cut_widths(trainer: LabelTrainer, followers: list[str]) -> dict[str, int]:
    """The width of each follower's embedding, as the top takes it (the top's inputs after ours)."""
    return {f: h.shape[1] for f, h in zip(followers, trainer.top.inputs[1:], strict=True)}


def _predict(channel: Channel, trainer: LabelTrainer,
             data: FeatureMatrix | StreamedFeatures | EventMatrix, followers: list[str],
             kind: Kind, wire: Wire) -> np.ndarray:
    """Probabilities `[rows, tasks]` of every row (or event) of `data`.

    They come from our columns and the followers' embeddings of `kind`, each checked to hold
    the chunk's people at the cut width, all finite.
    """
    predicted = [np.zeros((0, trainer.top.outputs[0].shape[1]), np.float32)]
    widths = _cut_widths(trainer, followers)
    for chunk in data.chunks(EVAL_BATCH):
        received, spread = [], spread_of(chunk)
        for f in followers:
            h = unpacked(wire, channel.recv(kind, f), f, kind)
            check_array(h, f, kind, Due(np.float32, widths[f], rows=len(chunk), finite=True))
            received.append(spread.to_events(h))
        predicted.append(trainer.predict(chunk.cats, chunk.nums, received).numpy())
    return np.concatenate(predicted)
