"""``steelqc inspect`` (PASS / HOLD / FAIL for a batch of images) and ``steelqc monitor`` (drift report)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from pathlib import Path

import typer

from steelqc.cli._app import (
    INSPECTION,
    ConfigOption,
    JsonOption,
    SetOption,
    app,
    console,
    exit_for,
    fail,
    progress_bar,
    run_guarded,
    settings_from_cli,
    stdout_console,
)
from steelqc.runtimes import AUTO, RUNTIMES


class RuntimeChoice(StrEnum):
    """typer's choices for --runtime: auto, then the runtimes of steelqc.runtimes."""

    auto = "auto"
    keras = "keras"
    onnx = "onnx"
    openvino = "openvino"


assert tuple(RuntimeChoice) == (AUTO, *RUNTIMES)
ModelOption = typer.Option(None, "--model", "-m", help="MLflow model URI; default models:/<registered_model>@champion")


def parse_image_size(text: str) -> tuple[int, int] | None:
    """``256x1600`` → (256, 1600); ``any`` → None (no size check)."""
    if text.lower() == "any":
        return None
    height, sep, width = text.lower().partition("x")
    if not sep or not height.isdigit() or not width.isdigit() or int(height) < 1 or int(width) < 1:
        fail(f"--image-size expects HEIGHTxWIDTH (e.g. 256x1600) or 'any', got {text!r}")
    return int(height), int(width)


def _parse_date(text: str | None, flag: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        fail(f"{flag} expects a date like 2026-11-27, got {text!r}")


@contextmanager
def strips_progress() -> Iterator[Callable[[int, int], None]]:
    """The CLI's progress bar (strips/s, terminal only) fed by ``inspect_batch``, which reports each group's count."""
    with progress_bar("inspecting", unit="strips") as update:
        finished = 0

        def advance(done: int, total: int) -> None:
            nonlocal finished
            finished += done
            update(finished, total)

        yield advance


@app.command(rich_help_panel=INSPECTION)
def inspect(
    path: str = typer.Argument(..., help="An image file, a folder of images or an s3://bucket/prefix"),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for decisions.csv/.json, report.html and overlays/"),
    model: str | None = ModelOption,
    workers: int = typer.Option(4, min=1, help="Threads reading and decoding images"),
    batch_images: int = typer.Option(8, min=1, help="Images whose patches share model batches"),
    image_size: str = typer.Option("256x1600", help="Expected HEIGHTxWIDTH (other sizes are errors) or 'any'"),
    log: bool = typer.Option(True, "--log/--no-log", help="Append every patch to the production patch log"),
    runtime: RuntimeChoice = typer.Option(AUTO, help="What scores: auto = the passed export if any, else keras"),
    as_json: bool = JsonOption,
    config: str | None = ConfigOption,
    sets: list[str] | None = SetOption,
) -> None:
    """Decide PASS / HOLD / FAIL for every image; bad images are listed with their reason, never skipped."""
    from steelqc.batch_inspection import DecidedBy, inspect_batch
    from steelqc.monitoring import MonitoringDataError, model_reference, patch_log_of
    from steelqc.promotion import champion_uri
    from steelqc.pyfunc import load_inspector
    from steelqc.tracking import configure_tracking

    settings = settings_from_cli(config, sets)
    model = model or champion_uri(settings)
    size = parse_image_size(image_size)
    run_guarded(configure_tracking, settings)
    try:
        inspector, meta = load_inspector(model, runtime=runtime.value)
    except Exception as exc:  # noqa: BLE001 - exit_for re-raises what the exit-code table does not know
        exit_for(exc, f" (loading model {model})")
    if meta.runtime_note:
        console.print(f"[yellow]warning:[/] {meta.runtime_note}")
    reducer = None
    if log:
        try:
            _, reducer = model_reference(str(meta.run_id))
        except MonitoringDataError as exc:
            console.print(f"[yellow]warning:[/] {exc}; logging patches without embeddings")
    patch_log = patch_log_of(settings) if log else None
    with strips_progress() as progress:
        result = run_guarded(
            inspect_batch, inspector, path, out, workers=workers, batch_images=batch_images, patch_log=patch_log,
            reducer=reducer, image_size=size, endpoint_url=settings.data.s3_endpoint_url,
            model_version=meta.version, max_image_pixels=settings.data.max_image_pixels, progress=progress,
            decided_by=DecidedBy(model, meta.version, meta.runtime, card=meta.tags or {}),
        )  # fmt: skip
    if as_json:
        typer.echo(json.dumps({
            "images": result.images, "model": model, "version": meta.version, "runtime": meta.runtime,
            "mode": inspector.mode, "counts": result.counts,
            "errors": dict(result.errors), "errors_listed": len(result.errors),
            "decisions_csv": str(result.csv_path), "decisions_json": str(result.json_path),
            "overlays": str(out / "overlays"), "patch_log": result.patch_log_files,
            "images_per_second": result.images_per_second,
        }))  # fmt: skip
        return
    stdout = stdout_console()
    counts = ", ".join(f"{k} {v}" for k, v in result.counts.items())
    stdout.print(
        f"{result.images} images with {model} (v{meta.version or '-'}, {meta.runtime}, "
        f"{inspector.mode} mode): {counts}"
    )
    for image, reason in result.errors:
        stdout.print(f"  [red]ERROR[/] {image}: {reason}")
    if result.counts.get("ERROR", 0) > len(result.errors):
        stdout.print(f"  and {result.counts['ERROR'] - len(result.errors)} more ERROR rows in {result.csv_path}")
    stdout.print(
        f"decisions: {result.csv_path} and {result.json_path}; {result.overlay_count} overlays in {out / 'overlays'}"
    )
    console.print(f"report: {result.report_path} (open in a browser)")
    for logged in result.patch_log_files:
        stdout.print(f"patch log: {logged}")
    console.print(f"{result.images_per_second:.1f} images/s")


@app.command(rich_help_panel=INSPECTION)
def monitor(
    since: str | None = typer.Option(
        None, help="First day (YYYY-MM-DD) of patch log to compare; default: monitoring.window_days ago"
    ),
    until: str | None = typer.Option(None, help="Last day (YYYY-MM-DD), inclusive; default: today"),
    out: Path | None = typer.Option(None, "--out", "-o", help="Report folder; default <state>/reports/monitor-<time>"),
    model: str | None = ModelOption,
    reference: Path | None = typer.Option(None, help="Reference folder (reference.parquet) instead of the model's own"),
    as_json: bool = JsonOption,
    config: str | None = ConfigOption,
    sets: list[str] | None = SetOption,
) -> None:
    """Evidently drift report of the production patch log against the model's reference; exit 1 on drift."""
    from steelqc.monitoring import (
        drift_report,
        log_drift_run,
        model_reference,
        model_version_of,
        patch_log_of,
        read_window,
    )
    from steelqc.promotion import champion_uri
    from steelqc.tracking import configure_tracking

    settings = settings_from_cli(config, sets)
    model = model or champion_uri(settings)
    first = _parse_date(since, "--since") or datetime.now(UTC).date() - timedelta(days=settings.monitoring.window_days)
    last = _parse_date(until, "--until")
    run_guarded(configure_tracking, settings)
    try:
        version, run_id = model_version_of(model)
    except Exception as exc:  # noqa: BLE001 - exit_for re-raises what the exit-code table does not know
        exit_for(exc, f" (resolving model {model})")
    reference_frame, _ = run_guarded(model_reference, run_id, reference)
    current, others = run_guarded(read_window, patch_log_of(settings), first, last, version)
    if others:
        console.print(f"{others} logged patches of other model versions are not compared with v{version}'s reference")
    folder = out or settings.state_dir / "reports" / f"monitor-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    result = run_guarded(drift_report, reference_frame, current, folder, settings.monitoring)
    params = {"model": model, "model_version": str(version), "since": str(first), "until": str(last or "today")}
    run = log_drift_run(settings, result, params)
    if as_json:
        typer.echo(json.dumps({**result.summary(), "model": model, "model_version": version, "mlflow_run": run}))
        raise typer.Exit(1 if result.drift_detected else 0)
    stdout = stdout_console()
    stdout.print(
        f"{result.n_current} production patches vs {result.n_reference} reference patches: "
        f"{result.drifted_share:.0%} of columns drifted {result.drifted_columns}, score drift {result.score_drift}, "
        f"embedding drift {result.embedding_drift}"
    )
    stdout.print(f"report: {result.html_path}\nsummary: {result.json_path}\nMLflow run: {run}")
    if result.drift_detected:
        stdout.print("[bold red]drift detected:[/] " + "; ".join(result.reasons))
        raise typer.Exit(1)
    stdout.print("[green]no drift[/]")
