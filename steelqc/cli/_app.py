"""The shared Typer app and helpers every command module uses."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from steelqc.config import Settings, load_settings, resolve_profile
from steelqc.quiet_start import quiet_tensorflow_start

quiet_tensorflow_start()  # the entry point's console shows steelqc's lines, not TensorFlow's banner

app = typer.Typer(
    name="steelqc",
    help="Visual inspection of steel strip: validate, patch, train, gate, inspect, monitor.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
# Typer labels every flag "<bool>" in help (--help and --version too), which says nothing a flag does not: flags
# get no type label. Typer offers no setting for it; tests/code/test_cli_conventions.py checks every command's help.
_display_type_rich = typer.core.TyperOption.display_type_rich


def _no_type_for_flags(self: typer.core.TyperOption, ctx: Any) -> str | None:
    return None if self.is_flag and self.metavar is None else _display_type_rich(self, ctx)


typer.core.TyperOption.display_type_rich = _no_type_for_flags  # type: ignore[method-assign]

# Help panels of `steelqc --help`, in the order a dataset travels through the commands.
DATA, TRAINING, PROMOTION, INSPECTION = "Data", "Training", "Promotion", "Inspection"
# Output that is not a terminal (logs, pipes, tests) is laid out this wide, whatever COLUMNS says.
LOG_WIDTH = 200
# soft_wrap: messages are never broken inside a sentence or a path (users grep logs for them); the terminal
# wraps long lines itself, and output that is not a terminal gets each message on one line.
def _unwrapped_console(*, stderr: bool) -> Console:
    """A terminal's own width, else wide enough that no table cell is cut; messages never wrapped."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, soft_wrap=True, width=None if stream.isatty() else LOG_WIDTH)


console = _unwrapped_console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from steelqc import __version__

        typer.echo(f"steelqc {__version__}")
        raise typer.Exit()


@app.callback()
def _show_library_progress(
    version: bool = typer.Option(
        False, "--version", "-V", is_eager=True, callback=_print_version, help="Print the version and exit"
    ),
) -> None:
    """steelqc's own log lines (training epochs, weight conversion) on the console, once per process."""
    logger = logging.getLogger("steelqc")
    if not any(isinstance(handler, RichHandler) for handler in logger.handlers):
        logger.addHandler(RichHandler(console=console, show_path=False, show_level=False, markup=False))
        logger.setLevel(logging.INFO)
        logger.propagate = False  # not twice when a library (Prefect, MLflow) configured the root logger


class _RateColumn(ProgressColumn):
    """Items per second, e.g. ``41.3 images/s`` (blank until rich has measured a speed)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.1f} {self.unit}/s" if task.speed else "")


@contextmanager
def progress_bar(description: str, unit: str = "items") -> Iterator[Callable[[int, int], None]]:
    """A progress bar with a rate, driven by the library's ``progress(done, total)`` callbacks.

    On the diagnostics console (stderr): animated on a terminal, silent in logs and pipes.
    """
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(unit),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def stdout_console() -> Console:
    """Standard output as it is now (tests and pipes swap it per command, so built at call time)."""
    return _unwrapped_console(stderr=False)

ConfigOption = typer.Option(
    None,
    "--config",
    "-c",
    help="Profile name (demo, real, severstal) or path to a YAML file; default: the built-in defaults",
)
SetOption = typer.Option(None, "--set", help="Override a setting: --set train.epochs_frozen=2 (repeatable)")
JsonOption = typer.Option(False, "--json", help="Print the result as one JSON object on stdout")


def parse_sets(sets: list[str] | None) -> dict[str, str]:
    """``["train.epochs_frozen=2"]`` → ``{"train.epochs_frozen": "2"}``; a malformed item exits with code 2."""
    parsed: dict[str, str] = {}
    for item in sets or []:
        if "=" not in item:
            fail(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        parsed[key.strip()] = value.strip()
    return parsed


def settings_from_cli(
    config: str | None, sets: list[str] | None, *, generated_data: bool = False, **overrides: Any
) -> Settings:
    """Settings from the profile :func:`~steelqc.config.resolve_profile` picks, ``--set key=value`` flags and
    command-specific flags (None = unset)."""
    parsed: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    parsed.update(parse_sets(sets))
    return run_guarded(load_settings, resolve_profile(config, generated_data=generated_data), parsed)


def registry_settings(config: str | None, sets: list[str] | None) -> Settings:
    """The settings, after checking the registry answers: a server that is down is one line and exit 2 in seconds,
    not MLflow's minutes of retries followed by a traceback."""
    from steelqc.tracking import configure_tracking

    settings = settings_from_cli(config, sets)
    run_guarded(configure_tracking, settings)
    return settings


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error and exit with ``code`` (2 = usage/config, 1 = the check failed)."""
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


# The one table from error type to exit code: 1 = a check said no (the data gate, a promotion rule), 2 = unusable
# input or setup. Keyed by class path so the CLI loads none of these modules (MLflow, TensorFlow) before a
# command does: an error whose module was never imported cannot have been raised. ValueError is how the library
# reports settings and data it cannot work with (a checkpoint of another model, a split without defects).
INTERRUPTED_EXIT_CODE = 130  # what a shell reports for a command ended by Ctrl-C (128 + SIGINT)
EXIT_CODES = {
    "steelqc.validation.ValidationFailed": 1,
    "steelqc.promotion.PromotionError": 1,
    "steelqc.data.errors.DataError": 2,
    "steelqc.tracking.TrackingUnavailableError": 2,
    "steelqc.lite0.WeightsUnavailableError": 2,  # re-exported by steelqc.model; matched where defined
    "mlflow.exceptions.MlflowException": 2,
    "builtins.OSError": 2,  # unreadable or unwritable paths
    "builtins.ValueError": 2,  # includes ConfigError
}


def _class_paths(exc: BaseException) -> list[str]:
    return [f"{cls.__module__}.{cls.__qualname__}" for cls in type(exc).__mro__]


def exit_code(exc: BaseException) -> int | None:
    """The code of the most specific class of ``exc`` in :data:`EXIT_CODES`; None for an unexpected error (a bug)."""
    return next((EXIT_CODES[path] for path in _class_paths(exc) if path in EXIT_CODES), None)


def exit_for(exc: Exception, note: str = "") -> NoReturn:
    """Exit with the code of ``exc`` and its message (then ``note``); re-raise an error the table does not know."""
    code = exit_code(exc)
    if code is None:
        raise exc
    text = str(exc).strip() or type(exc).__name__
    if "mlflow.exceptions.MlflowException" in _class_paths(exc):
        text = f"MLflow: {text.splitlines()[0]}"  # MLflow appends pages of detail after the first line
    fail(text + note, code)


T = TypeVar("T")


def run_guarded(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``func``; an error of :data:`EXIT_CODES` becomes one clear line and its exit code."""
    try:
        return func(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - exit_for re-raises what the table does not know
        exit_for(exc)


def existing_path(path: Path) -> Path:
    if not path.exists():
        fail(f"{path} does not exist")
    return path
