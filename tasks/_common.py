"""What every pipeline task shares: the retry rule and the task options."""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from splitrec_core.errors import InputError
from tasks._policies import content_policy


def retry_unless_bad_input(task: Any, task_run: Any, state: Any) -> bool:
    """Retry transient failures; bad input fails at once, since a retry cannot fix it."""
    try:
        state.result()
    except InputError:
        return False
    except BaseException:  # noqa: BLE001 - any other failure may be transient
        return True
    return True


def uncached_task_options() -> dict[str, Any]:
    """Decorator arguments for a task that must run every time: it changes state (the model
    registry, the run's artifacts) or reads state that changes (a registry alias)."""
    return task_options() | {"cache_policy": NO_CACHE, "persist_result": False}


def task_options(config_sections: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Decorator arguments for a pipeline task; `config_sections` names the top-level sections of
    the config it reads, if not all of it (they alone then key its cache)."""
    return {
        "retries": 2,
        "retry_delay_seconds": exponential_backoff(backoff_factor=2),
        "retry_jitter_factor": 0.5,
        "retry_condition_fn": retry_unless_bad_input,
        "cache_policy": content_policy(config_sections),
        "persist_result": True,
    }
