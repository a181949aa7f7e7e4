"""The `[training]` section: how every party trains; a module of its own, the longest section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from splitrec_core.config.sections import Strict


class TrainingConfig(Strict):
    """Optimisation settings shared by all parties (the batch order comes from `seed`)."""

    epochs: int = Field(default=5, ge=1)
    batch_size: int = Field(default=1024, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    learning_rate_decay: float = Field(
        default=1.0, gt=0, le=1,
        description="the learning rate is multiplied by this after every epoch")
    validation_fraction: float = Field(
        default=0.1, ge=0, lt=0.5,
        description="share of training rows held out to choose the epoch; 0 = keep the last epoch")
    patience: int = Field(
        default=5, ge=1,
        description="stop after this many epochs without a better mean validation AUC")
    parties_in: Literal["threads", "processes", "flight"] = Field(
        default="threads", description="how `run` places the parties on this machine: threads of "
                                       "one process, a process each (own interpreter and runtime), "
                                       "or a process each talking Arrow Flight with mutual TLS on "
                                       "127.0.0.1, as parties apart do")
    own_cores: bool = Field(
        default=False, description="with parties_in = \"processes\" or \"flight\": the label "
                                   "party's process runs on half the cores, the others share the "
                                   "rest (as on hosts of their own) instead of the OS placing them")
    wire_dtype: Literal["float32", "float16", "int8"] = Field(
        default="float32",
        description="the type embeddings and gradients cross the channel in: float16 halves "
                    "the bytes; int8 (one float32 scale per row, max |x| / 127) cuts them to "
                    "about a quarter; each party computes in float32")
    embed_ahead: int = Field(
        default=0, ge=0, le=2,
        description="batches a feature party embeds before the gradient of the oldest one it sent "
                    "returns: 0 = sequential (split training equals central training); 1 or 2 = "
                    "pipelined, its bottom one or two steps stale, so its work overlaps the label "
                    "party's")
    batches_per_message: int = Field(
        default=1, ge=1, le=8,
        description="training batches whose embeddings (and gradients) cross in one message: "
                    "each message costs the same CPU whatever its size, so fewer, larger ones "
                    "leave the parties more time to compute; above 1 a feature party waits for "
                    "gradients once per message, its bottom up to k - 1 batches stale (2k - 1 "
                    "with embed_ahead = 1)")
    local_updates: bool = Field(
        default=False,
        description="while a party waits for a peer's message in training, it takes local "
                    "steps on the last batches it exchanged (CELU-VFL): more learning per "
                    "round trip over a long link, no extra traffic")
    local_workset: int = Field(
        default=5, ge=1, le=64,
        description="with local_updates: the last batches each party keeps to step on")
    local_reuse: int = Field(
        default=5, ge=1, le=64,
        description="with local_updates: local steps each kept batch may take at most")
    local_min_cosine: float = Field(
        default=0.5, ge=-1, le=1,
        description="with local_updates: a kept row counts in a local step weighted by the "
                    "cosine similarity of its cached and current value (embedding at a feature "
                    "party, gradient at the label party), and not at all below this")
    xla: bool = Field(
        default=False,
        description="compile the training steps (each party's, and central training's) with XLA "
                    "into fused kernels, compiled before the first batch, that use every core (one "
                    "thread each when the parties step side by side, embed_ahead >= 1); equal to "
                    "central training compiled the same way up to float rounding")
    stream_buffer: int = Field(
        default=0, ge=0,
        description="0: every party reads its features whole and shuffles all fitting rows at "
                    "once (central training's order, so split training equals it); k > 0: every "
                    "party streams its features a row group (a million rows) at a time, the "
                    "groups in a seeded order and the rows of k groups shuffled together, so its "
                    "memory holds k row groups")
    loss_weighting: Literal["static", "uncertainty"] = Field(
        default="static",
        description="task weights as configured, or learned (Kendall et al. 2018)")
    seed: int = 7
