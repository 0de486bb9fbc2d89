"""`steelqc train` / `steelqc evaluate` fail with one clear line and the documented exit code."""

from __future__ import annotations

import socket
from pathlib import Path

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


def test_train_on_a_missing_dataset_names_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", str(tmp_path / "nowhere"), "--config", "demo"])
    assert result.exit_code == 2 and "dataset folder not found" in result.output and "nowhere" in result.output


def test_evaluate_unknown_model_fails_cleanly(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["evaluate", "models:/steelqc/7", str(tmp_path), "--config", "demo"])
    assert result.exit_code == 2 and "steelqc" in result.output
