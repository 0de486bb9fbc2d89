"""``steelqc app``: the Streamlit inspection app (Inspect and QA pages) on the local machine."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import typer

from steelqc.cli._app import INSPECTION, ConfigOption, SetOption, app, settings_from_cli
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


@app.command("app", rich_help_panel=INSPECTION)
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
    raise typer.Exit(run_until_stopped(streamlit_command(settings, config, sets or [])))


def run_until_stopped(command: list[str], grace_seconds: float = 10.0) -> int:
    """Run ``command`` until it exits or this process gets SIGTERM, SIGINT or SIGHUP, then stop it too.

    Without this a SIGTERM (a service manager, ``kill``) ended this process alone and left Streamlit serving
    the port. A stop asked for this way exits 0; the child gets ``grace_seconds`` to shut down, then is killed.
    """
    child = subprocess.Popen(command)
    stopped: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        stopped.append(signum)
        child.terminate()

    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {sig: signal.signal(sig, stop) for sig in handled}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if child.poll() is None:
            try:
                child.wait(grace_seconds)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    return 0 if stopped else code
