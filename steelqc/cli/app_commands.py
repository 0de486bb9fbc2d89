"""``steelqc app``: the Streamlit inspection app (Inspect and QA pages) on the local machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import typer

from steelqc.cli._app import ConfigOption, SetOption, app, settings_from_cli
from steelqc.config import Settings

APP_SCRIPT = Path(__file__).resolve().parents[1] / "app" / "main.py"


def streamlit_command(settings: Settings, config: str | None, sets: list[str]) -> list[str]:
    """``streamlit run`` headless on the configured address, usage stats and developer menu off, upload limit set.

    The profile and ``--set`` flags go to the app script after ``--`` so the pages see the same settings.
    """
    script_args = (["--config", config] if config else []) + [arg for item in sets for arg in ("--set", item)]
    return [
        sys.executable, "-m", "streamlit", "run", str(APP_SCRIPT),
        "--server.headless", "true",
        "--server.address", settings.app.host,
        "--server.port", str(settings.app.port),
        "--server.maxUploadSize", str(settings.app.max_upload_mb),
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "viewer",
        "--", *script_args,
    ]  # fmt: skip


@app.command("app")
def run_app(
    host: str = typer.Option(None, "--host", help="Address to bind (default app.host, 127.0.0.1)"),
    port: int = typer.Option(None, "--port", min=1, max=65535, help="Port (default app.port, 8501)"),
    config: str = ConfigOption,
    sets: list[str] = SetOption,
) -> None:
    """Start the inspection app: Inspect (operators) and QA (promotion approval) pages."""
    overrides: dict[str, Any] = {"app.host": host, "app.port": port}
    settings = settings_from_cli(config, sets, **overrides)
    typer.echo(f"steelqc app on http://{settings.app.host}:{settings.app.port} (Ctrl-C stops it)")
    raise typer.Exit(subprocess.call(streamlit_command(settings, config, sets or [])))
