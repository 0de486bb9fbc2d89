"""The one retry policy: transient failures (network, object store, tracking server) retry, bad data never does."""

from __future__ import annotations

import pytest
import requests
from botocore.exceptions import EndpointConnectionError
from mlflow.exceptions import MlflowException
from prefect import flow, task

from steelqc.data.errors import DataError
from tasks.retries import IO_RETRIES, is_transient_error, retry_policy, tracking_retry_policy


@pytest.mark.parametrize(
    "error",
    [
        ConnectionResetError("reset"),
        TimeoutError("slow store"),
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        requests.ConnectionError("refused"),
    ],
)
def test_network_and_store_failures_are_transient(error: BaseException) -> None:
    assert is_transient_error(error)


@pytest.mark.parametrize(
    "error",
    [
        DataError("row 3: malformed RLE"),
        FileNotFoundError("train.csv"),
        PermissionError("read-only"),
        IsADirectoryError("a folder"),
        ValueError("a bug"),
        KeyError("missing column"),
    ],
)
def test_bad_data_wrong_paths_and_bugs_fail_at_once(error: BaseException) -> None:
    assert not is_transient_error(error)


def test_tracking_errors_are_transient_only_in_the_tracking_policy() -> None:
    assert not is_transient_error(MlflowException("server said 503"))
    assert is_transient_error(MlflowException("server said 503"), (MlflowException,))
    assert tracking_retry_policy()["retries"] == IO_RETRIES["retries"] == 2


def _attempts_until_failure(error: BaseException) -> int:
    """Run a real Prefect task that always raises ``error``; return how often it ran."""
    calls: list[int] = []
    policy = {**retry_policy(), "retry_delay_seconds": 0}

    @task(**policy)
    def always_fails() -> None:
        calls.append(1)
        raise error

    @flow
    def run() -> None:
        always_fails()

    with pytest.raises(type(error)):
        run()
    return len(calls)


def test_prefect_retries_a_transient_failure_and_not_bad_data(prefect_server: str) -> None:
    assert _attempts_until_failure(ConnectionResetError("reset")) == 3
    assert _attempts_until_failure(DataError("bad row")) == 1
