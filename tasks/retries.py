"""When a task is retried: only for failures the network or a store may fix, never for bad data."""

from __future__ import annotations

from typing import Any

import requests
from botocore.exceptions import BotoCoreError

from steelqc.data.errors import DataError

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError, BotoCoreError, requests.RequestException)


def retry_policy(*also_transient: type[BaseException]) -> dict[str, Any]:
    """``@task`` keyword arguments: two retries (5 s, 30 s) when the failure is transient."""
    transient = TRANSIENT_ERRORS + also_transient

    def is_transient(task: Any, task_run: Any, state: Any) -> bool:
        try:
            state.result()
        except DataError:
            return False
        except transient:
            return True
        except Exception:  # noqa: BLE001 - any other failure is deterministic: fail at once
            return False
        return False

    return {"retries": 2, "retry_delay_seconds": [5, 30], "retry_condition_fn": is_transient}
