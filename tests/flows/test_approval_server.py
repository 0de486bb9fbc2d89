"""QA approval through a real local Prefect server, with the deployments of ``prefect.yaml``.

One server, work pool and worker for the module (all on 127.0.0.1, own ``PREFECT_HOME``, stopped at the
end): ``prefect deploy --all`` registers the three scheduled deployments; a ``retrain`` deployment run
passes the gate and suspends; ``steelqc approve`` (the real CLI) resumes it, the resumed run reloads its
persisted results instead of retraining and moves ``champion``; ``steelqc reject`` resumes a second run
that completes without moving it; ``approve`` after the wait timed out marks the version timed out.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from mlflow.tracking import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

from flows import approval
from steelqc import promotion
from steelqc.config import Settings, load_settings
from steelqc.promotion import PromotionError

from servers import free_port, start, stop, tail, wait_until_up
from tiny import TINY

# Every run passes the gate against the champion (tolerance 1.0), so each one reaches the QA wait.
QA_TINY = {**TINY, "gate.recall_tolerance": 1.0}

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STEELQC_CLI = Path(sys.executable).parent / "steelqc"
RUN_TIMEOUT_S = 420  # one tiny training run on 2 busy cores, with TensorFlow's import in the worker's child



@dataclass(frozen=True)
class PrefectStack:
    """A running server + worker, and the environment the worker's flow runs see."""

    api_url: str
    env: dict[str, str]
    state_dir: Path
    worker_log: Path

    def settings(self) -> Settings:
        return load_settings("demo", {**QA_TINY, "state_dir": str(self.state_dir)})


def _prefect(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "prefect", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, f"prefect {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectStack]:
    """``prefect server start`` + work pool + ``prefect deploy --all`` + ``prefect worker start``, torn down after."""
    root = tmp_path_factory.mktemp("approval-server")
    state = root / "state"
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "STEELQC_", "MLFLOW_"))}
    env = {
        **base,
        "HOME": str(root / "home"),
        "PREFECT_HOME": str(root / "prefect"),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOCAL_STORAGE_PATH": str(root / "results"),
        # The deployments' cron schedules stay recorded, but no scheduled run fires during the test.
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_LOOP_SECONDS": "2",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        "STEELQC_STATE_DIR": str(state),
        "MLFLOW_TRACKING_URI": f"sqlite:///{state / 'mlflow.db'}",
        "KERAS_HOME": str(state / "keras"),
        "MPLCONFIGDIR": str(state / "matplotlib"),
    }
    server_log, worker_log = root / "server.log", root / "worker.log"
    server = start(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        server_log,
        env,
        root,
    )
    worker: subprocess.Popen[bytes] | None = None
    try:
        wait_until_up(f"{api_url}/health", server, server_log)
        _prefect(["work-pool", "create", "steelqc-process", "--type", "process"], env, root)
        _prefect(["--no-prompt", "deploy", "--all"], env, PROJECT_ROOT)
        # Started outside the project: the flow runs must find it through the deployment's working directory.
        worker = start(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", "steelqc-process"], worker_log, env, root
        )
        yield PrefectStack(api_url, env, state, worker_log)
    finally:
        if worker is not None:
            stop(worker)
        stop(server)


@pytest.fixture
def prefect_api(stack: PrefectStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrefectStack]:
    """This process talks to the stack's server and shares the worker's state folder and registry."""
    for key in ("STEELQC_STATE_DIR", "MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
        monkeypatch.setenv(key, stack.env[key])
    # Prefect reads its settings once per process: the env var alone would not reach an imported client.
    # The local storage path is the worker's, so this process can read the flow runs' persisted results.
    with temporary_settings(
        {PREFECT_API_URL: stack.api_url, PREFECT_LOCAL_STORAGE_PATH: stack.env["PREFECT_LOCAL_STORAGE_PATH"]}
    ):
        with get_client(sync_client=True) as client:
            assert str(client.api_url).rstrip("/") == stack.api_url
            assert client.api_healthcheck() is None
        yield stack


def _start_retrain(data: Path, overrides: dict[str, Any]) -> UUID:
    run = run_deployment(
        "retrain/retrain",
        parameters={"data": str(data), "config": "demo", "overrides": overrides, "auto_approve": False},
        timeout=0,
    )
    assert isinstance(run, FlowRun)
    return run.id


def _wait_for(stack: PrefectStack, flow_run_id: UUID, done: Callable[[FlowRun], bool], what: str) -> FlowRun:
    """Poll the flow run until ``done``; fail at once (with the worker's log) if it ends otherwise."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            if done(run):
                return run
            if (run.state is not None and run.state.is_final()) or time.monotonic() > deadline:
                raise AssertionError(
                    f"flow run {flow_run_id} is {run.state_name}, expected {what}:\n{tail(stack.worker_log, 4000)}"
                )
            time.sleep(2)


def _suspended_version(stack: PrefectStack, flow_run_id: UUID) -> str:
    """Wait until the run is suspended for QA and its version is pending with that run's id; the version."""
    run = _wait_for(stack, flow_run_id, lambda r: r.state is not None and r.state.is_paused(), "Suspended")
    assert run.state is not None and run.state.name == "Suspended"
    pending = [p for p in promotion.list_pending(stack.settings()) if p.flow_run_id == str(flow_run_id)]
    assert len(pending) == 1, promotion.list_pending(stack.settings())
    return pending[0].version


def _cli(stack: PrefectStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(STEELQC_CLI), *args],
        env=stack.env,
        cwd=stack.state_dir.parent,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _task_states(flow_run_id: UUID, task_name: str) -> list[str]:
    """State names of every run of ``task_name`` in the flow run (one per execution, first and resumed)."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return sorted(r.state_name or "" for r in runs if r.name.startswith(f"{task_name}-"))


def test_deploy_all_registers_the_scheduled_deployments(prefect_api: PrefectStack) -> None:
    with get_client(sync_client=True) as client:
        deployments = {d.name: d for d in client.read_deployments()}
    assert set(deployments) == {"retrain", "monitor-drift", "inspect-batch"}
    crons = {name: [s.schedule.cron for s in d.schedules] for name, d in deployments.items()}  # type: ignore[union-attr]
    assert crons == {"retrain": ["0 2 * * 1"], "monitor-drift": ["30 6 * * *"], "inspect-batch": ["0 * * * *"]}
    for deployment in deployments.values():
        assert deployment.work_pool_name == "steelqc-process"
        # No pull section in prefect.yaml: `prefect deploy` recorded the project folder as working directory.
        assert deployment.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT_ROOT)}}
        ]
    limit = deployments["retrain"].global_concurrency_limit
    assert limit is not None and limit.limit == 1
    assert deployments["retrain"].parameters["auto_approve"] is False


def test_approve_resumes_the_suspended_run_and_reject_leaves_the_champion(
    prefect_api: PrefectStack, learnable_dataset: Path
) -> None:
    stack = prefect_api
    settings = stack.settings()
    first_run = _start_retrain(learnable_dataset, QA_TINY)
    first = _suspended_version(stack, first_run)
    assert promotion.champion_version(settings) is None  # nothing moves while QA has not answered

    approved = _cli(stack, "approve", first, "--reviewer", "qa-lead", "--comment", "looks right")
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert f"resumed flow run {first_run}" in approved.stdout
    with pytest.raises(PromotionError, match="not waiting for an answer"):  # a second answer changes nothing
        approval.reject(settings, first, reviewer="someone-else")
    run = _wait_for(stack, first_run, lambda r: r.state is not None and r.state.is_completed(), "Completed")
    outcome = run.state.result()  # type: ignore[union-attr]
    assert outcome["outcome"] == "promoted" and outcome["reviewer"] == "qa-lead"
    assert promotion.champion_version(settings) == first
    card = promotion.champion_card(settings)
    assert card is not None and card["approved_by"] == "qa-lead" and card["version"] == first
    # The resumed run reloaded its persisted results: trained and registered once, not again after resuming.
    for name in (
        "split-patch-index",
        "start-mlflow-run",
        "train",
        "choose-thresholds",
        "evaluate",
        "register-model",
        "gate",
    ):
        assert _task_states(first_run, name) == ["Cached", "Completed"], name
    assert _task_states(first_run, "promote") == ["Completed"]
    client = MlflowClient(settings.mlflow_tracking_uri)
    versions = client.search_model_versions(f"name='{settings.tracking.registered_model}'")
    assert [str(v.version) for v in versions] == [first]

    second_run = _start_retrain(learnable_dataset, QA_TINY)
    second = _suspended_version(stack, second_run)
    rejected = _cli(stack, "reject", second, "--reviewer", "qa-lead", "--comment", "not convinced")
    assert rejected.returncode == 0, rejected.stdout + rejected.stderr
    run = _wait_for(stack, second_run, lambda r: r.state is not None and r.state.is_completed(), "Completed")
    assert run.state.result()["outcome"] == "rejected"  # type: ignore[union-attr]
    assert promotion.champion_version(settings) == first
    tags = client.get_model_version(settings.tracking.registered_model, second).tags
    assert tags["approval_status"] == "rejected" and tags["approved_by"] == "qa-lead"
    history = promotion.list_decisions(settings)
    assert {("promote", first), ("reject", second)} <= set(zip(history.action, history.version, strict=True))

    listed = _cli(stack, "promotions")
    assert listed.returncode == 0 and f"champion: v{first}" in listed.stdout


def test_approve_after_the_wait_timed_out_never_promotes(prefect_api: PrefectStack, learnable_dataset: Path) -> None:
    stack = prefect_api
    settings = stack.settings()
    champion_before = promotion.champion_version(settings)
    flow_run_id = _start_retrain(learnable_dataset, {**QA_TINY, "gate.approval_timeout_hours": 0.001})  # ~4 s
    # Suspended for a few seconds only: wait for the server to fail the expired pause, then find the version.
    run = _wait_for(
        stack, flow_run_id, lambda r: r.state is not None and r.state.is_failed(), "Failed after the timeout"
    )
    assert "pause" in (run.state.message or "").lower(), run.state  # type: ignore[union-attr]
    pending = [p for p in promotion.list_pending(settings) if p.flow_run_id == str(flow_run_id)]
    assert len(pending) == 1, promotion.list_pending(settings)
    version = pending[0].version

    late = _cli(stack, "approve", version, "--reviewer", "qa-lead")
    assert late.returncode == 1, late.stdout + late.stderr
    assert "marked timed_out" in late.stdout + late.stderr
    client = MlflowClient(settings.mlflow_tracking_uri)
    tags = client.get_model_version(settings.tracking.registered_model, version).tags
    assert tags["approval_status"] == "timed_out"
    assert promotion.champion_version(settings) == champion_before
