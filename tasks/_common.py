"""What every pipeline task shares: the retry rule and the task options."""

from __future__ import annotations

from typing import Any

from prefect.tasks import exponential_backoff

from splitrec_core.errors import InputError
from tasks._policies import CONTENT


def retry_unless_bad_input(task: Any, task_run: Any, state: Any) -> bool:
    """Retry transient failures; bad input fails at once, since a retry cannot fix it."""
    try:
        state.result()
    except InputError:
        return False
    except BaseException:  # noqa: BLE001 - any other failure may be transient
        return True
    return True


#: Decorator arguments for every pipeline task.
TASK_OPTIONS: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_unless_bad_input,
    "cache_policy": CONTENT,
    "persist_result": True,
}
