"""``steelqc train`` (one training job into MLflow and the registry) and ``steelqc evaluate`` (re-score a model)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import typer

from steelqc.cli._app import (
    INTERRUPTED_EXIT_CODE,
    TRAINING,
    ConfigOption,
    JsonOption,
    SetOption,
    app,
    console,
    fail,
    run_guarded,
    settings_from_cli,
)
from steelqc.config import Settings
from steelqc.workspace import default_work_dir, require_writable

# TensorFlow and MLflow load inside the commands, so `steelqc synth`, `validate`, ... start in a second.


def _data_root(data: str | None, settings: Settings) -> str:
    root = data or settings.data.root
    if root is None:
        fail("no dataset given: pass DATA or set data.root")
    return str(root)


def _format_metrics(metrics: Mapping[str, float]) -> str:
    from steelqc.train_job import headline_metrics

    return "  ".join(f"{name}={value:.4f}" for name, value in headline_metrics(metrics).items())


@app.command(rich_help_panel=TRAINING)
def train(
    data: str | None = typer.Argument(None, help="Dataset folder or s3://bucket/prefix (default: data.root)"),
    work_dir: Path | None = typer.Option(
        None,
        "--work-dir",
        help="Folder for reports, index and checkpoints; reuse it to resume (default: <state>/runs/…)",
    ),
    as_json: bool = JsonOption,
    config: str | None = ConfigOption,
    sets: list[str] | None = SetOption,
) -> None:
    """Validate, patch, train, pick thresholds on val, evaluate on test, log to MLflow and register a version."""
    settings = settings_from_cli(config, sets)
    root = _data_root(data, settings)
    work = work_dir or default_work_dir(settings.state_dir)
    # before TensorFlow's import, which alone takes ~10 s
    run_guarded(require_writable, settings.state_dir, "state folder")
    run_guarded(require_writable, work, "work folder")
    from steelqc.train_job import run_training_job

    try:
        result = run_guarded(run_training_job, root, settings, work_dir=work)
    except KeyboardInterrupt:
        fail(
            f"interrupted; finished epochs are checkpointed in {work / 'checkpoints'}. Resume with: "
            f"steelqc train {root} --work-dir {work} (and the same --config/--set options)",
            INTERRUPTED_EXIT_CODE,
        )
    summary = {"run_id": result.run_id, "model": result.registered_model, "version": result.version, **result.headline}
    if as_json:
        typer.echo(json.dumps(summary))
        return
    t = result.thresholds
    typer.echo(f"run id:      {result.run_id}")
    name, version = result.registered_model, result.version
    typer.echo(f"registered:  {name} version {version} (models:/{name}/{version})")
    typer.echo(f"thresholds:  t_pass={t.t_pass:.4f}  t_fail={t.t_fail:.4f}  val recall bound={t.recall_bound:.4f}")
    typer.echo(f"test:        {_format_metrics(result.metrics)}")
    if not t.bound_met:
        console.print(f"[yellow]note:[/] {t.note}")
    console.print(f"work folder: {result.work_dir}")
    typer.echo(json.dumps(summary))


@app.command(rich_help_panel=TRAINING)
def evaluate(
    model_uri: str = typer.Argument(..., help="models:/steelqc@champion, models:/steelqc/3 or runs:/<id>/model"),
    data: str | None = typer.Argument(None, help="Dataset folder or s3://bucket/prefix (default: data.root)"),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Report folder (default: <state>/reports/evaluate-<UTC time>)"
    ),
    as_json: bool = JsonOption,
    config: str | None = ConfigOption,
    sets: list[str] | None = SetOption,
) -> None:
    """Re-score a logged model on a dataset's test split with the model's own thresholds and patch geometry."""
    settings = settings_from_cli(config, sets)
    out_dir = out or settings.state_dir / "reports" / datetime.now(UTC).strftime("evaluate-%Y%m%dT%H%M%SZ")
    from steelqc.train_job import evaluate_model, headline_metrics

    report = run_guarded(evaluate_model, model_uri, _data_root(data, settings), settings, out_dir)
    summary = {"model_uri": model_uri, **headline_metrics(report.metrics), "report": str(out_dir / "evaluation")}
    if not as_json:
        typer.echo(f"test:        {_format_metrics(report.metrics)}")
        typer.echo(f"report:      {out_dir / 'evaluation'}")
    typer.echo(json.dumps(summary))
