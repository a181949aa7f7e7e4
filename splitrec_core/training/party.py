"""One party's whole part of split training, from its own files only.

It builds and traces its models, agrees with the others over the channel on the epoch to resume
from, trains, and saves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from splitrec_core.channel import Channel, Kind
from splitrec_core.channel.expect import Due, receive_array
from splitrec_core.config import Config
from splitrec_core.cpu import CpuSpan, process_cpu_s, this_process
from splitrec_core.features import PartyFeatures, Transform
from splitrec_core.privacy.entropy import private_seed
from splitrec_core.registry.provenance import fingerprint
from splitrec_core.training.checkpoint import Checkpoints
from splitrec_core.training.epochs import Plan
from splitrec_core.training.event_matrix import EventMatrix
from splitrec_core.training.feature_party import feature_loop
from splitrec_core.training.label_party import LabelOutcome, label_loop
from splitrec_core.training.local_updates import LocalSettings
from splitrec_core.training.models import build_bottom, build_top, task_weighting
from splitrec_core.training.runs import LoopSettings, save_model
from splitrec_core.training.steps import BottomTrainer, LabelTrainer, StepSettings, set_op_threads
from splitrec_core.training.streaming import open_features
from splitrec_core.training.wire import Wire


@dataclass(frozen=True)
class PartyOutcome:
    """What one party's part of split training yields."""

    models: dict[str, Path]       # "bottom", and for the label party "top"
    ready_at: float               # wall clock when its steps were traced (and, with XLA, compiled)
    cpu: CpuSpan                  # its process's CPU from then until its last epoch ended
    sent: dict[str, dict[str, int]]  # what its channel sent
    resumed_after_epoch: int      # the epoch every party had checkpointed (0: from scratch)
    label: LabelOutcome | None = None


_HELD = Due(np.int64)            # a feature party's checkpointed epochs
_AGREED = Due(np.int64, rows=1)  # the label party's answer: the one to resume from


def agree_on_start(channel: Channel, checkpoints: Checkpoints, cfg: Config) -> int:
    """The latest epoch every party has a checkpoint for, agreed over the channel.

    Never the last epoch: its gradients feed the leakage audit. Each feature party tells the
    label party which epochs it holds, the label party answers with the one all will resume
    from. No party reads another's checkpoints.
    """
    label, limit = cfg.label_party, cfg.training.epochs - 1
    mine = {k for k in checkpoints.completed() if k <= limit}
    if channel.me != label:
        channel.send(Kind.RESUME, label, pa.table({"epochs": np.array(sorted(mine), np.int64)}))
        return int(receive_array(channel, Kind.RESUME, label, _AGREED, "epochs")[0])
    for follower in cfg.followers:
        mine &= set(receive_array(channel, Kind.RESUME, follower, _HELD, "epochs").tolist())
    start = max(mine, default=0)
    for follower in cfg.followers:
        channel.send(Kind.RESUME, follower, pa.table({"epochs": np.array([start], np.int64)}))
    return start


@dataclass(frozen=True)
class PartyJob:
    """Party `party`'s part of split training on `files`, writing to `out_dir`.

    Picklable, so it can run in a process (or on a host) of its own.
    """

    party: str
    cfg: Config
    files: PartyFeatures
    out_dir: Path

    @property
    def checkpoints(self) -> Checkpoints:
        """Its checkpoints for these exact settings and input files (changed inputs start over)."""
        run_id = fingerprint(self.cfg.model_dump(mode="json"), list(self.files.paths))
        return Checkpoints(self.out_dir / "checkpoints" / run_id)

    def __call__(self, channel: Channel) -> PartyOutcome:
        """Train this party's part over `channel`, from the epoch all agree on, and save it."""
        cfg, training = self.cfg, self.cfg.training
        set_op_threads(training.xla, side_by_side=training.embed_ahead > 0)
        events = self.party == cfg.label_party and cfg.label.events
        train, test = (EventMatrix.read(path) if events
                       else open_features(path, training.stream_buffer)
                       for path in (self.files.train, self.files.test))
        plan = Plan.of(training, len(train))
        steps = StepSettings(plan.learning_rate(training), training.xla,
                             noise_seed=private_seed("noise", self.party),
                             local_min_cosine=training.local_min_cosine
                             if training.local_updates else None)
        models = {"bottom": build_bottom(cfg, self.party, Transform.load(self.files.transform))}
        checkpoints = self.checkpoints
        trainer: LabelTrainer | BottomTrainer
        if self.party == cfg.label_party:
            models["top"] = build_top(cfg, cfg.order)
            trainer = LabelTrainer(models["bottom"], models["top"], task_weighting(cfg),
                                   replace(steps, noise=cfg.privacy.gradient_noise),
                                   fused=training.embed_ahead > 0)
        else:
            trainer = BottomTrainer(models["bottom"],
                                    replace(steps, noise=cfg.privacy.embedding_noise))
        trainer.trace(plan.batch_sizes)
        ready_at, cpu_at_ready = time.time(), process_cpu_s()
        start = agree_on_start(channel, checkpoints, cfg)
        local = (LocalSettings(training.local_workset, training.local_reuse)
                 if training.local_updates else None)
        run = LoopSettings(train, test, plan, checkpoints, start, Wire(training.wire_dtype),
                           training.batches_per_message, training.embed_ahead, local)
        outcome = None
        if isinstance(trainer, LabelTrainer):
            outcome = label_loop(channel, trainer, run, followers=cfg.followers,
                                 tasks=cfg.task_names)
            cpu_at_end = outcome.trained_cpu_s
        else:
            cpu_at_end = feature_loop(channel, trainer, run, leader=cfg.label_party)
        saved = {name: save_model(model, self.out_dir / f"{name}.keras")
                 for name, model in models.items()}
        checkpoints.clear()
        cpu = CpuSpan(this_process(), cpu_at_ready, cpu_at_end)
        return PartyOutcome(saved, ready_at, cpu, channel.sent().as_dict(), run.start_epoch,
                            outcome)

