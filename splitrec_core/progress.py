"""Progress of a long step in the log: how much is done of the total, every few seconds.

It logs often enough that a terminal or a Prefect run page never sits silent for a minute.
"""

from __future__ import annotations

import logging
import time


class Progress:
    """Counts units of work done and logs `what: done of total` at most every `every` seconds.

    It logs once more at `finish`.
    """

    def __init__(self, logger: logging.Logger, what: str, total: int | None = None,
                 every: float = 5.0) -> None:
        self.logger, self.what, self.total, self.every = logger, what, total, every
        self.done = 0
        self.logged_at = time.monotonic()

    def add(self, count: int) -> None:
        """Count `count` more units done; log if `every` seconds have passed since the last line."""
        self.done += count
        if time.monotonic() - self.logged_at >= self.every:
            self._log()

    def finish(self) -> None:
        """Log the final count."""
        self._log()

    def _log(self) -> None:
        self.logged_at = time.monotonic()
        of = f" of {self.total:,}" if self.total is not None else ""
        self.logger.info("%s: %s%s", self.what, f"{self.done:,}", of)
