"""Choosing where a flow's fan-out runs: the local thread pool or Dask (a fresh LocalCluster or an address)."""

from __future__ import annotations

import pytest
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from flows.runners import task_runner


def test_local_runner_is_a_thread_pool_of_n_workers() -> None:
    runner = task_runner("local", n_workers=3)
    assert isinstance(runner, ThreadPoolTaskRunner)
    assert runner._max_workers == 3


def test_dask_runner_starts_a_loopback_local_cluster_by_default() -> None:
    runner = task_runner("dask", n_workers=2)
    assert isinstance(runner, DaskTaskRunner)
    assert runner.address is None
    assert runner.cluster_kwargs["n_workers"] == 2
    assert runner.cluster_kwargs["host"] == "127.0.0.1"
    assert runner.cluster_kwargs["dashboard_address"] is None


def test_dask_runner_uses_an_existing_cluster_by_address() -> None:
    runner = task_runner("dask", dask_address="tcp://dask-scheduler:8786")
    assert isinstance(runner, DaskTaskRunner)
    assert runner.address == "tcp://dask-scheduler:8786"
    assert runner.cluster_kwargs == {}


@pytest.mark.parametrize(
    ("kind", "address", "workers", "message"),
    [
        ("spark", None, 2, "unknown task runner 'spark'"),
        ("local", "tcp://host:8786", 2, "needs the dask runner"),
        ("dask", None, 0, "n_workers must be at least 1"),
    ],
)
def test_bad_choices_fail_with_a_clear_message(kind: str, address: str | None, workers: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        task_runner(kind, address, workers)  # type: ignore[arg-type]
