"""The shared Typer app and helpers every command module uses."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from steelqc.config import ConfigError, Settings, load_settings
from steelqc.data.errors import DataError

app = typer.Typer(
    name="steelqc",
    help="Visual inspection of steel strip: validate, patch, train, gate, inspect, monitor.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Output that is not a terminal (logs, pipes, tests) is laid out this wide, whatever COLUMNS says.
LOG_WIDTH = 200
# soft_wrap: messages are never broken inside a sentence or a path (users grep logs for them); the terminal
# wraps long lines itself, and output that is not a terminal gets each message on one line.
def _unwrapped_console(*, stderr: bool) -> Console:
    """A terminal's own width, else wide enough that no table cell is cut; messages never wrapped."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, soft_wrap=True, width=None if stream.isatty() else LOG_WIDTH)


console = _unwrapped_console(stderr=True)


def stdout_console() -> Console:
    """Standard output as it is now (tests and pipes swap it per command, so built at call time)."""
    return _unwrapped_console(stderr=False)

ConfigOption = typer.Option(None, "--config", "-c", help="Profile name (demo, real, severstal) or path to a YAML file")
SetOption = typer.Option(None, "--set", help="Override a setting: --set train.epochs_frozen=2 (repeatable)")


def parse_sets(sets: list[str] | None) -> dict[str, str]:
    """``["train.epochs_frozen=2"]`` → ``{"train.epochs_frozen": "2"}``; a malformed item exits with code 2."""
    parsed: dict[str, str] = {}
    for item in sets or []:
        if "=" not in item:
            fail(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        parsed[key.strip()] = value.strip()
    return parsed


def settings_from_cli(config: str | None, sets: list[str] | None, **overrides: Any) -> Settings:
    """Settings from a profile plus ``--set key=value`` flags and command-specific flags (None = unset)."""
    parsed: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    parsed.update(parse_sets(sets))
    try:
        return load_settings(config, parsed)
    except ConfigError as exc:
        fail(str(exc))
        raise  # unreachable; keeps type checkers happy


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit with ``code`` (2 = usage/config, 1 = the check failed)."""
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def run_guarded(func: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``func`` and turn steelqc's typed errors into a clear message and exit code 2."""
    try:
        return func(*args, **kwargs)
    except (DataError, ConfigError, OSError) as exc:  # OSError: unreadable or unwritable paths
        fail(str(exc))


def existing_path(path: Path) -> Path:
    if not path.exists():
        fail(f"{path} does not exist")
    return path
