"""A feature party's part of split training.

It embeds its own rows, hands the embeddings to the label party, steps its bottom on the
gradients that come back, and follows the label party's decisions.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from functools import partial

import tensorflow as tf

from splitrec_core.channel import Channel, Kind
from splitrec_core.channel.expect import receive_row
from splitrec_core.cpu import process_cpu_s
from splitrec_core.training.epochs import DECISION, EVAL_BATCH, BestWeights, Decision
from splitrec_core.training.local_updates import LocalUpdates, take_stepping
from splitrec_core.training.runs import LoopSettings
from splitrec_core.training.steps import BottomTrainer
from splitrec_core.training.wire import BatchesIn, BatchesOut

_log = logging.getLogger(__name__)


def bottom_epoch(trainer: BottomTrainer, batches: Iterable[tuple[tf.Tensor, tf.Tensor]],
                 embeddings: BatchesOut, gradients: BatchesIn, ahead: int = 0,
                 local: LocalUpdates | None = None) -> None:
    """One epoch of a bottom: embed each batch, hand it over, step on the gradient that returns.

    Each batch is (`cats`, `nums`); its embedding goes in the `embeddings` outbox. While a
    batch's gradient is awaited there is nothing to do, so the step on one batch and the
    embedding of the next go to TensorFlow as one call (in that order: the next embedding comes
    from the updated bottom, exactly as in sequential training). With `ahead` > 0 it hands over
    that many more messages before it waits for the oldest one's gradients: the label party then
    never waits for this party, at the price of embeddings from a bottom that many messages
    stale. With several batches per message it waits only once a message's batches are all sent.
    With `local` updates it steps on cached batches while it waits (`local_updates`).
    """
    in_flight = embeddings.per_message * (ahead + 1) - 1  # batches sent before waiting
    waiting: deque[tuple[tf.Tensor, tf.Tensor, tf.Tensor]] = deque()  # awaiting their gradients
    for cats, nums in batches:
        if len(waiting) > in_flight:  # step on the oldest batch's gradient (waits for it)
            oldest = waiting.popleft()
            grad = _gradient(gradients, oldest, local)
            h = trainer.backward_then_forward(*oldest[:2], grad, cats, nums)
        else:
            h = trainer.forward(cats, nums)
        embeddings.put(h)
        waiting.append((cats, nums, h))
    embeddings.flush()
    while waiting:
        oldest = waiting.popleft()
        trainer.backward(*oldest[:2], _gradient(gradients, oldest, local))
    gradients.end_epoch()


def _gradient(gradients: BatchesIn, batch: tuple[tf.Tensor, tf.Tensor, tf.Tensor],
              local: LocalUpdates | None) -> tf.Tensor:
    """The gradient of `batch` (its columns and the embedding sent), stepping locally meanwhile.

    With `local` updates the batch joins the workset once its gradient is in.
    """
    grad = take_stepping(gradients, len(batch[0]), local)
    if local is not None:
        local.workset.add(*batch, grad)
    return grad


def feature_loop(channel: Channel, trainer: BottomTrainer, run: LoopSettings, *,
                 leader: str) -> float:
    """A feature party's training run from `run.start_epoch`, then its embeddings of the test rows.

    It embeds `run.ahead` messages ahead (see `bottom_epoch`), `run.per_message` training
    batches a message, and hands them to the label party `leader`. After each epoch it embeds
    the validation rows (with the training noise: they are training rows) and follows the label
    party's decision to keep the weights and to stop. It makes the next epoch's batches while
    the label party scores the validation rows: then nobody waits for them.

    Returns its process's CPU seconds when its last epoch ended (`process_cpu_s`), before it
    embedded the test rows.
    """
    plan, wire, checkpoints = run.plan, run.wire, run.checkpoints
    best = BestWeights([trainer.bottom])
    if run.start_epoch:
        best.load(checkpoints.restore(run.start_epoch, [trainer.bottom], [trainer.optimizer]))
    batches = run.train.batches(plan, run.start_epoch)
    validation = run.train.take(plan.validation)
    embeddings = BatchesOut(partial(channel.send, Kind.EMBEDDING, leader), wire, run.per_message)
    gradients = BatchesIn(channel, Kind.GRADIENT, leader, trainer.bottom.output_shape[-1], wire,
                      run.per_message)
    local = LocalUpdates.of(run.local, plan.seed, trainer.local_step)
    for epoch in range(run.start_epoch, plan.epochs):
        bottom_epoch(trainer, batches, embeddings, gradients, run.ahead, local)
        for chunk in validation.chunks(EVAL_BATCH):
            h = trainer.forward(chunk.cats, chunk.nums)
            channel.send(Kind.VALIDATION_EMBEDDING, leader, wire.pack(h))
        if epoch + 1 < plan.epochs:
            batches = run.train.batches(plan, epoch + 1)
        decision = Decision(**receive_row(channel, Kind.EARLY_STOPPING, leader, DECISION))
        if local is not None:
            _log.debug("%s: %d local steps in epoch %d", channel.me, local.counted(), epoch + 1)
        if decision.improved:
            best.keep()
        if decision.stop:
            break
        checkpoints.save(epoch + 1, [trainer.bottom], [trainer.optimizer], best.arrays())
    trained_cpu_s = process_cpu_s()
    best.restore()
    for chunk in run.test.chunks(EVAL_BATCH):
        h = trainer.embed(chunk.cats, chunk.nums)
        channel.send(Kind.EVAL_EMBEDDING, leader, wire.pack(h))
    return trained_cpu_s
