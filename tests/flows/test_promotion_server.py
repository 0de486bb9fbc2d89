"""Two approvals racing through a real ``mlflow server`` on 127.0.0.1, from two processes that share no folder.

Both challengers were gated against the same (absent) champion, so at most one may become champion. The
processes have separate state folders: a local file lock protects nothing here, only the registry claim
(:mod:`steelqc.promotion_lock`) does. Without it both would read "no champion" and both would move the alias.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from steelqc import promotion
from steelqc.config import Settings, load_settings
from steelqc.gate import gate
from steelqc.promotion_lock import CLAIM_TAG

from servers import free_port, start, stop, wait_until_up

pytestmark = pytest.mark.slow

METRICS = {"patch_recall": 0.99, "image_recall": 1.0, "patch_precision": 0.5}

# Each contender signals it is ready (imports done), waits for the common go, then approves its version.
CONTENDER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from steelqc import promotion
    from steelqc.config import load_settings

    version, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    settings = load_settings()
    ready.touch()
    while not go.exists():
        time.sleep(0.001)
    try:
        promotion.approve_pending(settings, version, reviewer=f"qa-{version}")
        print(json.dumps({"version": version, "outcome": "approved"}))
    except promotion.PromotionError as exc:
        print(json.dumps({"version": version, "outcome": type(exc).__name__, "message": str(exc)}))
    """
)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow server`` on SQLite, one worker, no job consumers (~0.5 GB, a few seconds to start)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    env.update(HOME=str(root), MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log = root / "mlflow.log"
    process = start(command, log, env, root)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/health", process, log)
        yield url
    finally:
        stop(process)


def _settings(server: str, state: Path) -> Settings:
    return load_settings(overrides={"state_dir": str(state), "tracking.tracking_uri": server})


def _gated_version(settings: Settings, client: MlflowClient, run_id: str) -> str:
    name = settings.tracking.registered_model
    version = str(client.create_model_version(name, f"runs:/{run_id}/model", run_id).version)
    promotion.record_gate(settings, version, gate(METRICS, None, recall_target=0.95))
    return version


def test_two_processes_approving_against_the_same_champion_move_it_once(mlflow_server: str, tmp_path: Path) -> None:
    settings = _settings(mlflow_server, tmp_path / "state-test")
    client = MlflowClient(mlflow_server, mlflow_server)
    name = settings.tracking.registered_model
    client.create_registered_model(name)
    run_id = client.create_run(client.create_experiment("race")).info.run_id
    versions = [_gated_version(settings, client, run_id) for _ in range(2)]
    assert sorted(p.version for p in promotion.list_pending(settings)) == versions

    go = tmp_path / "go"
    contenders = []
    for version in versions:
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": mlflow_server,
            "STEELQC_STATE_DIR": str(tmp_path / f"state-{version}"),  # no shared folder, so no shared file lock
        }
        contenders.append(
            subprocess.Popen(
                [sys.executable, "-c", CONTENDER, version, str(tmp_path / f"ready-{version}"), str(go)],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
        )  # fmt: skip
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{v}").exists() for v in versions):
        assert time.monotonic() < deadline and all(c.poll() is None for c in contenders), [
            c.communicate() for c in contenders
        ]
        time.sleep(0.05)
    go.touch()
    results = []
    for contender in contenders:
        out, err = contender.communicate(timeout=120)
        assert contender.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))

    winners = [r["version"] for r in results if r["outcome"] == "approved"]
    losers = [r for r in results if r["outcome"] != "approved"]
    assert len(winners) == 1 and len(losers) == 1, results
    assert promotion.champion_version(settings) == winners[0]
    assert promotion.alias_version(client, name, promotion.PREVIOUS) is None  # moved once, from no champion
    loser = losers[0]["version"]
    assert client.get_model_version(name, loser).tags["approval_status"] == "superseded"
    assert "superseded" in losers[0]["message"]
    assert promotion.list_pending(settings) == []
    assert CLAIM_TAG not in client.get_registered_model(name).tags
    history = promotion.list_decisions(settings)
    assert list(history[history.action == "promote"].version) == winners
