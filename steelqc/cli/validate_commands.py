"""``steelqc validate``: the data validation gate (Great Expectations) and its report."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from steelqc.cli._app import (
    DATA,
    ConfigOption,
    JsonOption,
    SetOption,
    app,
    console,
    fail,
    progress_bar,
    run_guarded,
    settings_from_cli,
    stdout_console,
)
from steelqc.data.dataset import Dataset
from steelqc.validation import SUITES_DIR, Mode, ValidationResult, validate_dataset, write_suites


def _examples(examples: list[dict[str, object]]) -> str:
    return "\n".join(" ".join(f"{k}={v}" for k, v in example.items()) for example in examples[:3])


def print_report(result: ValidationResult) -> None:
    """A short table of failed expectations with a few example rows each, then the counts and paths (stdout)."""
    console = stdout_console()
    if result.failed_expectations:
        table = Table(title="Failed expectations", show_lines=True)
        for column in ("suite.column", "expectation", "n", "examples"):
            table.add_column(column, overflow="fold")
        for failure in result.failed_expectations:
            warning = " (warning)" if failure["severity"] != "critical" else ""
            table.add_row(
                f"{failure['suite']}.{failure['column']}{warning}",
                failure["expectation"].removeprefix("expect_"),
                str(failure["unexpected_count"]),
                escape(_examples(failure["examples"])),
            )
        console.print(table)
    verdict = "[bold green]VALID[/]" if result.success else "[bold red]INVALID[/]"
    console.print(
        f"{verdict} ({result.mode} mode): kept {len(result.kept_image_ids)}/{result.n_images} images and "
        f"{len(result.kept_label_rows)}/{result.n_label_rows} label rows; "
        f"rejected {result.n_rejected_images} images, {result.n_rejected_rows} rows"
    )
    if result.duplicates:
        console.print(f"warning: {len(result.duplicates)} groups of exactly duplicated images (see summary)")
    console.print(f"data hash {result.data_hash}")
    console.print(f"Data Docs: {result.docs_index}")
    console.print(f"summary:   {result.summary_path}")
    console.print(f"rejected:  {result.rejected_path}")
    if result.manifest_path:
        console.print(f"manifest:  {result.manifest_path}")


@app.command(rich_help_panel=DATA)
def validate(
    data: str | None = typer.Argument(None, help="Dataset folder or s3://bucket/prefix (default: data.root)"),
    report: Path | None = typer.Option(
        None, "--report", "-r", help="Report folder (default: <state>/reports/validation-<UTC time>)"
    ),
    quarantine: bool | None = typer.Option(
        None,
        "--quarantine/--no-quarantine",
        help="Drop bad rows/images and pass if enough remains, or fail on any bad row (default: validation.mode)",
    ),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Image scan threads (default: data.image_workers)"
    ),
    regenerate_suites: bool = typer.Option(
        False, "--write-suites", help=f"Regenerate the suite JSON files in {SUITES_DIR} from code and exit"
    ),
    as_json: bool = JsonOption,
    config: str | None = ConfigOption,
    sets: list[str] | None = SetOption,
) -> None:
    """Validate a dataset with Great Expectations: exit 0 when usable, 1 when not, 2 on unusable input."""
    if regenerate_suites:
        for path in write_suites():
            console.print(f"wrote {path}")
        return
    settings = settings_from_cli(config, sets)
    root = data or settings.data.root
    if root is None:
        fail("no dataset given: pass DATA or set data.root")
    mode: Mode | None = None if quarantine is None else ("quarantine" if quarantine else "fail")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report_dir = report or settings.state_dir / "reports" / f"validation-{stamp}"
    dataset = run_guarded(Dataset.configured, root, settings.data)

    def validate_with_progress() -> ValidationResult:
        with progress_bar("scanning images", unit="images") as progress:
            return validate_dataset(
                dataset,
                settings.validation,
                report_dir,
                mode=mode,
                workers=workers or settings.data.image_workers,
                progress=progress,
            )

    result = run_guarded(validate_with_progress)  # after the bar has closed, an error is the last line
    if not as_json:
        print_report(result)
    outcome = {"success": result.success, "data_hash": result.data_hash, "summary": str(result.summary_path),
               "data_docs": str(result.docs_index), "rejected": str(result.rejected_path)}  # fmt: skip
    typer.echo(json.dumps(outcome))
    if not result.success:
        raise typer.Exit(1)
