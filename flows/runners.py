"""Where a flow's fan-out work runs: threads in the flow's own process, or a Dask cluster.

One machine is the embedded default; a mill's data outgrows it, and then the same flows run their
mapped tasks on Dask through prefect-dask (``--runner dask``), either on a LocalCluster started for the
run or on an existing cluster (``--dask-address tcp://host:8786``). Use it as
``my_flow.with_options(task_runner=task_runner(kind, dask_address))``.

Dask workers report task states to the Prefect API themselves: point ``PREFECT_API_URL`` at a Prefect
server before the cluster starts. In ephemeral mode (no server) every worker process starts its own
temporary server, which works but costs seconds per worker and can time out on a busy machine.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

RunnerKind: TypeAlias = Literal["local", "dask"]
RUNNER_KINDS: tuple[RunnerKind, ...] = ("local", "dask")


def local_cluster_kwargs(n_workers: int) -> dict[str, object]:
    """A LocalCluster of single-threaded worker processes bound to loopback, its Bokeh dashboard off.

    One thread per process because image decoding and TensorFlow already use native threads; loopback
    because Dask has no authentication, so nothing may be reachable from the network.
    """
    return {
        "n_workers": n_workers,
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": None,
    }


def task_runner(
    kind: RunnerKind = "local", dask_address: str | None = None, n_workers: int = 2
) -> ThreadPoolTaskRunner | DaskTaskRunner:
    """The Prefect task runner for ``kind``: ``local`` → a thread pool of ``n_workers`` threads;
    ``dask`` → a temporary LocalCluster of ``n_workers`` processes, or the cluster at ``dask_address``.

    Raises ``ValueError`` for an unknown kind, a non-positive ``n_workers``, or an address given with
    the local runner (the address would be silently ignored otherwise).
    """
    if kind not in RUNNER_KINDS:
        raise ValueError(f"unknown task runner {kind!r}; choose one of {', '.join(RUNNER_KINDS)}")
    if n_workers < 1:
        raise ValueError(f"n_workers must be at least 1, got {n_workers}")
    if kind == "local":
        if dask_address:
            raise ValueError("a Dask address needs the dask runner (--runner dask)")
        return ThreadPoolTaskRunner(max_workers=n_workers)
    if dask_address:
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=local_cluster_kwargs(n_workers))
