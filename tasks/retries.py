"""When a task is retried: only for failures the network or a store may fix, never for bad data.

Every task that retries takes one of the two policies below, so "what is transient" is decided here once.
"""

from __future__ import annotations

from typing import Any

import requests
from botocore.exceptions import BotoCoreError

from steelqc.data.errors import DataError

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError, BotoCoreError, requests.RequestException)
# OSErrors that another attempt cannot fix: the path is wrong, not the connection.
PERMANENT_OS_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)
RETRY_DELAYS_SECONDS = [5, 30]


def is_transient_error(error: BaseException, also_transient: tuple[type[BaseException], ...] = ()) -> bool:
    """True for a failure a retry may fix (network, store); bad data and wrong paths fail at once."""
    if isinstance(error, (DataError, *PERMANENT_OS_ERRORS)):
        return False
    return isinstance(error, TRANSIENT_ERRORS + also_transient)


def retry_policy(*also_transient: type[BaseException]) -> dict[str, Any]:
    """``@task`` keyword arguments: two retries (5 s, 30 s) when the failure is transient."""

    def is_transient(task: Any, task_run: Any, state: Any) -> bool:
        try:
            state.result()
        except Exception as error:  # noqa: BLE001 - classified below; anything unknown fails at once
            return is_transient_error(error, also_transient)
        return False

    return {"retries": 2, "retry_delay_seconds": RETRY_DELAYS_SECONDS, "retry_condition_fn": is_transient}


def tracking_retry_policy() -> dict[str, Any]:
    """For steps that talk to the MLflow tracking server or registry (imports MLflow, so not at module level:
    the data tasks stay light for Dask workers)."""
    from mlflow.exceptions import MlflowException

    from steelqc.tracking import TrackingUnavailableError

    return retry_policy(MlflowException, TrackingUnavailableError)


# Files and object stores only.
IO_RETRIES = retry_policy()
