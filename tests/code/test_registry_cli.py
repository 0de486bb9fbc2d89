"""`steelqc train` / `steelqc evaluate` fail with one clear line and the documented exit code."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from steelqc.cli import app


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_train_without_data_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["train", "--config", "demo"])
    assert result.exit_code == 2 and "no dataset given" in result.output


def test_train_against_an_unreachable_tracking_server_exits_2(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{_closed_port()}"
    result = CliRunner().invoke(app, ["train", str(tmp_path), "--set", f"tracking.tracking_uri={uri}"])
    assert result.exit_code == 2 and "is unreachable" in result.output


@pytest.mark.parametrize(
    "command",
    [["promotions"], ["approve", "3", "-r", "qa"], ["reject", "3", "-r", "qa"], ["rollback", "-r", "qa"]],
)
def test_qa_commands_against_an_unreachable_registry_exit_2_in_seconds(
    command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    started = time.monotonic()
    result = CliRunner().invoke(app, command)
    assert time.monotonic() - started < 20
    assert result.exit_code == 2 and "is unreachable" in result.output and uri in result.output


def test_train_on_a_missing_dataset_names_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", str(tmp_path / "nowhere"), "--config", "demo"])
    assert result.exit_code == 2 and "dataset folder not found" in result.output and "nowhere" in result.output


def test_evaluate_unknown_model_fails_cleanly(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["evaluate", "models:/steelqc/7", str(tmp_path), "--config", "demo"])
    assert result.exit_code == 2 and "steelqc" in result.output
