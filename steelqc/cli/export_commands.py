"""``steelqc export``: a registered version's model as OpenVINO or ONNX, kept only if it passes the parity check."""

from __future__ import annotations

from enum import StrEnum

import typer

from steelqc.cli._app import (
    INSPECTION,
    ConfigOption,
    SetOption,
    app,
    fail,
    registry_settings,
    run_guarded,
    stdout_console,
)
from steelqc.runtimes import EXPORT_FORMATS


class ExportFormat(StrEnum):
    """typer's choices for --format: the export formats of steelqc.runtimes."""

    onnx = "onnx"
    openvino = "openvino"


assert tuple(ExportFormat) == EXPORT_FORMATS


@app.command(rich_help_panel=INSPECTION)
def export(
    model: str = typer.Argument(..., help="A registered version: models:/<name>/<version> or models:/<name>@<alias>"),
    fmt: ExportFormat = typer.Option(
        EXPORT_FORMATS[0], "--format", "-f", help="onnx (ONNX Runtime: faster in strip mode) or openvino (patch mode)"
    ),
    max_images: int = typer.Option(32, min=1, help="Validation images of the version compared in the parity check"),
    config: str | None = ConfigOption,
    sets: list[str] | None = SetOption,
) -> None:
    """Export, check parity with Keras on the version's validation images, store it with the version; exit 1 if not."""
    from mlflow.exceptions import MlflowException

    from steelqc.export_job import ExportError, export_version
    from steelqc.runtimes import RuntimeUnavailableError

    settings = registry_settings(config, sets)
    try:
        result = run_guarded(export_version, model, fmt.value, settings, max_images=max_images)
    except (ExportError, MlflowException) as exc:
        fail(str(exc).strip().splitlines()[0])
        return
    except RuntimeUnavailableError as exc:
        fail(f"{fmt.value} export of {model} not accepted, scoring stays keras: {exc}", code=1)
        return
    p = result.parity
    where = f"{result.name} v{result.version}"
    if not p.passed:
        fail(f"{fmt.value} export of {where} not accepted, scoring stays keras: {p.reason} "
             f"({p.patches} patches of {p.images} validation images)", code=1)  # fmt: skip
    stdout_console().print(
        f"{fmt.value} export of {where} passed parity on {p.images} validation images ({p.patches} patches): "
        f"max |score difference| {p.max_abs_diff:.1e}, decisions identical; stored at {result.stored_at}"
    )
