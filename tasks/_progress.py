"""Training's progress on the run's page: a progress artifact, moved by the per-epoch log lines.

The label party's training loggers log a line per epoch, with `epoch` and `epochs` on the
record; `epoch_progress` listens to them while training runs and keeps a progress artifact up to
date, from a thread of its own so training never waits for the API.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from splitrec_core.config import Config
from splitrec_core.results import TrainResult
from tasks.report import artifact_key


class EpochProgress(logging.Handler):
    """The label party's per-epoch log records as a progress artifact on the run's page.

    The records carry `epoch` and `epochs`. A thread of its own sends the updates (the latest
    wins), so training never waits for the API. (Parties in processes of their own send their
    records here: `run_in_processes`.)
    """

    def __init__(self, key: str, epochs: int) -> None:
        super().__init__(logging.INFO)
        self.artifact = create_progress_artifact(
            0.0, key=key, description=f"split training: at most {epochs} epochs")
        self._latest: tuple[float, str] | None = None
        self._closed = False
        self._changed = threading.Condition()
        # the caller's context: the API (a temporary one, too) is found through it
        self._sender = threading.Thread(target=contextvars.copy_context().run,
                                        args=(self._send,), name="epoch-progress", daemon=True)
        self._sender.start()

    def emit(self, record: logging.LogRecord) -> None:
        """Hand an epoch's record (one with `epoch`) to the sender, replacing any not yet sent."""
        if hasattr(record, "epoch"):
            with self._changed:
                self._latest = (100.0 * record.epoch / record.epochs, record.getMessage())
                self._changed.notify()

    def _send(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._latest is not None or self._closed)
                update, self._latest = self._latest, None
            if update is None:
                return
            update_progress_artifact(self.artifact, *update)

    def close(self) -> None:
        """Send the last update, then stop the sender."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._sender.join()
        super().close()

    def done(self, result: TrainResult) -> None:
        """Training is over: 100%, and how many epochs ran and which one's weights were kept."""
        update_progress_artifact(self.artifact, 100.0, description=(
            f"done: {result.epochs_run} epochs run, the weights of epoch {result.best_epoch} kept"))


@contextmanager
def epoch_progress(cfg: Config) -> Iterator[EpochProgress]:
    """An `EpochProgress` artifact fed by the training loggers while the block runs."""
    progress = EpochProgress(artifact_key(cfg, "training"), cfg.training.epochs)
    logger = logging.getLogger("splitrec_core.training")
    logger.addHandler(progress)
    try:
        yield progress
    finally:
        logger.removeHandler(progress)
        progress.close()
