"""``steelqc pipeline`` (the retraining flow) and ``steelqc demo`` (the whole thing on generated data)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import typer

from steelqc.cli._app import (
    INTERRUPTED_EXIT_CODE,
    TRAINING,
    JsonOption,
    SetOption,
    app,
    console,
    exit_for,
    fail,
    parse_sets,
    settings_from_cli,
)
from steelqc.config import GENERATED_DATA_PROFILE, Settings, resolve_profile

HEADLINE = (
    "patch_recall",
    "patch_precision",
    "patch_specificity",
    "image_recall",
    "image_precision",
    "image_specificity",
)


def _run_retrain(data: str | None, config: str | None, sets: list[str] | None, auto_approve: bool,
                 runner: str, dask_address: str | None) -> tuple[Settings, dict[str, Any]]:
    from flows.retrain import retrain
    from flows.runners import task_runner

    profile = resolve_profile(config, generated_data=data is None)
    settings = settings_from_cli(profile, sets)
    overrides = parse_sets(sets)
    if runner == "dask" and not os.environ.get("PREFECT_API_URL"):
        fail("--runner dask needs a Prefect server (set PREFECT_API_URL, e.g. http://127.0.0.1:4200/api): "
             "each Dask worker reports its task runs to the API, and in ephemeral mode every worker "
             "would start a server of its own")
    try:
        flow = retrain.with_options(task_runner=task_runner(runner, dask_address))  # type: ignore[arg-type]
        summary = flow(data=data, config=profile, overrides=overrides, auto_approve=auto_approve)
    except KeyboardInterrupt:
        fail("interrupted: the champion is unchanged (a training in progress closes its MLflow run KILLED)",
             INTERRUPTED_EXIT_CODE)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - exit_for re-raises what the exit-code table does not know
        exit_for(exc, "\nthe champion is unchanged")
    return settings, summary


def _print_summary(settings: Settings, summary: dict[str, Any]) -> None:
    metrics = summary["metrics"]
    typer.echo(
        f"registered: {settings.tracking.registered_model} v{summary['version']} (MLflow run {summary['run_id']})"
    )
    typer.echo("test metrics: " + ", ".join(f"{k}={metrics[k]:.4f}" for k in HEADLINE if k in metrics))
    gate = summary["gate"]
    typer.echo(f"gate: {'passed' if gate['passed'] else 'FAILED'} - {gate['reason']}")
    typer.echo(f"outcome: {summary['outcome']}")
    if summary["outcome"] == "pending approval":
        typer.echo(f"approve with: steelqc approve {summary['version']} --reviewer NAME [--comment ...]")


@app.command(rich_help_panel=TRAINING)
def pipeline(
    data: str = typer.Argument(None, help="Dataset folder or s3://bucket/prefix (default: generated data)"),
    config: str = typer.Option(
        None,
        "--config",
        "-c",
        help=f"Profile name (demo, severstal) or path to a YAML file; default: {GENERATED_DATA_PROFILE} on generated "
        "data (no DATA), else the built-in defaults",
    ),
    sets: list[str] = SetOption,
    auto_approve: bool = typer.Option(False, "--auto-approve", help="Promote without waiting for a QA lead"),
    runner: str = typer.Option("local", "--runner", help="local (threads) or dask"),
    dask_address: str = typer.Option(None, "--dask-address", help="tcp://host:port of an existing Dask scheduler"),
    as_json: bool = JsonOption,
) -> None:
    """Run the retraining flow: validate, patch, train, thresholds, evaluate, register, gate, approval."""
    settings, summary = _run_retrain(data, config, sets, auto_approve, runner, dask_address)
    if as_json:
        typer.echo(json.dumps(summary, default=str))
    else:
        _print_summary(settings, summary)
    if not summary["gate"]["passed"]:
        raise typer.Exit(1)


@app.command(rich_help_panel=TRAINING)
def demo(sets: list[str] = SetOption) -> None:
    """The main job end to end on the embedded default: generated data (so the demo profile), auto-approval."""
    from mlflow.tracking import MlflowClient

    from steelqc import promotion
    from steelqc.tracking import experiment_link

    started = time.monotonic()
    console.print("[bold]steelqc demo[/]: generate → validate → patch → train → thresholds → evaluate → "
                  "register → gate → promote (demo profile, auto-approved)")
    settings, summary = _run_retrain(None, None, sets, True, "local", None)
    _print_summary(settings, summary)
    card = promotion.champion_card(settings)
    state = settings.state_dir
    typer.echo("")
    typer.echo(f"champion: v{card['version']}" if card else "champion: none (the gate did not pass)")
    typer.echo(f"finished in {time.monotonic() - started:.0f} s")
    typer.echo("")
    typer.echo("open the results:")
    experiment_id = MlflowClient(settings.mlflow_tracking_uri).get_run(summary["run_id"]).info.experiment_id
    typer.echo(
        f"  MLflow UI:   .venv/bin/mlflow ui --backend-store-uri {settings.mlflow_tracking_uri}"
        f" --host 127.0.0.1 --port 5000   → {experiment_link('http://127.0.0.1:5000', experiment_id)}"
    )
    typer.echo(f"  data docs:   {summary['data_docs']}")
    typer.echo(f"  evaluation:  {summary['work_dir']}/evaluation/")
    typer.echo(f"  inspect:     .venv/bin/steelqc inspect {summary['data_root']}/train_images --out {state}/inspect")
    typer.echo("  app:         .venv/bin/steelqc app   → http://127.0.0.1:8501")
    typer.echo("  promotions:  .venv/bin/steelqc promotions")
