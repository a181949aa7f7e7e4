"""What the command line sets up around Prefect, before and after it is imported."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from splitrec_core.errors import InputError


def set_environment_defaults() -> None:
    """Set the environment's defaults for TensorFlow and Prefect, before Prefect is imported.

    Quiet TensorFlow's C++ start-up chatter and keep Prefect from phoning home; give the
    temporary Prefect API time to create its database on a slow machine (Prefect's default
    allows 20 s, which a first run on a fresh machine can exceed); show splitrec's own log lines
    among the flow's. Users can override each.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "splitrec_core")


def stop_on_sigterm() -> None:
    """Let SIGTERM (a service manager's stop, `kill`) stop the command as Ctrl-C does.

    Python's default for SIGTERM ends the process at once, so nothing cleans up: the temporary
    Prefect API a party started kept running. As a `KeyboardInterrupt`, every `finally` and
    exit handler runs, as after Ctrl-C.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def use_workdir_results(workdir: Path) -> None:
    """Keep Prefect's cached task results inside the run folder (set before Prefect is imported).

    So deleting a run folder also forgets its cache.
    """
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(workdir.resolve() / ".prefect"))


def start_temporary_api() -> Callable[[], None]:
    """Start Prefect's temporary API now, while the flow's modules load; returns the wait for it.

    Without an API to talk to (no `PREFECT_API_URL`), the first flow run starts a temporary one in
    a process of its own and waits for it. Started here, on a thread, its start-up overlaps with
    importing the flow; the flow run then finds it running (Prefect keeps one per process).
    Call the returned function before the flow runs: Prefect must not start a second one.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return lambda: None

    from prefect.server.api.server import SubprocessASGIServer  # here: a thread would import
    # it only as fast as the flow's own imports leave it the interpreter

    def start() -> None:
        with contextlib.suppress(Exception):  # the flow run starts it again, and says why not
            SubprocessASGIServer().start()

    starting = threading.Thread(target=start, name="start-prefect-api", daemon=True)
    starting.start()
    return starting.join


def _expected(error: BaseException | None) -> bool:
    """Whether `error` is one the user needs as a line, not a traceback.

    Bad input (`InputError`) and a peer that failed or broke the protocol (`PeerError`,
    `ProtocolError`: they name the peer and what it did).
    """
    if isinstance(error, InputError):
        return True
    contract = sys.modules.get("splitrec_core.channel.contract")  # loaded if a channel was
    return contract is not None and isinstance(error, contract.PeerError)


class _QuietExpectedErrors(logging.Filter):
    """Drop the traceback from log records about expected errors: the message says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record; strip the traceback from one about an expected error."""
        if record.exc_info and _expected(record.exc_info[1]):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_expected_errors() -> None:
    """Keep tracebacks of bad input and failing peers out of Prefect's log handlers.

    Call after Prefect is imported.
    """
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
               if name.startswith("prefect")]
    for logger in [logging.getLogger("prefect"), *loggers]:
        for handler in logger.handlers:
            handler.addFilter(_QuietExpectedErrors())
