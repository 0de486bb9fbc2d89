"""``steelqc synth``, ``steelqc import-voc`` and ``steelqc import-masks``: create a Severstal-layout dataset folder."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from steelqc.cli._app import DATA, app, existing_path, fail, progress_bar, run_guarded, stdout_console
from steelqc.data.importers import import_voc
from steelqc.data.mask_importer import MaskImportSummary, import_masks
from steelqc.data.mask_pairing import DEFAULT_CLEAN_FOLDERS, DEFAULT_MASK_PATTERNS
from steelqc.data.synth import SEVERSTAL_DEFECT_RATE, generate_dataset

MASK_PATTERN_HELP = (
    "Mask path relative to its image, with {stem} and {folder} (repeatable; replaces the defaults "
    f"{', '.join(DEFAULT_MASK_PATTERNS)})"
)
CLEAN_FOLDER_HELP = (
    f"Folder of defect-free images (repeatable; replaces the defaults {', '.join(DEFAULT_CLEAN_FOLDERS)})"
)


def _run_with_progress(description: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``func(*args, progress=…, **kwargs)`` under a progress bar, guarded. The error is printed after the bar
    has closed, so it is the last line of the output; a ValueError (an option the library cannot honour) is a
    usage error like a bad path."""

    def run() -> Any:
        with progress_bar(description) as progress:
            return func(*args, progress=progress, **kwargs)

    try:
        return run_guarded(run)
    except ValueError as exc:
        fail(str(exc))


@app.command(rich_help_panel=DATA)
def synth(
    out: str = typer.Option(..., "--out", "-o", help="Empty folder (or s3://bucket/prefix) to write the dataset to"),
    images: int = typer.Option(200, "--images", "-n", min=1, help="Number of images"),
    seed: int = typer.Option(0, "--seed", help="Same seed, same bytes"),
    contrast: float = typer.Option(1.0, "--contrast", min=0.05, help="Defect contrast (<1 harder, >1 easier)"),
    size_scale: float = typer.Option(1.0, "--size-scale", min=0.1, help="Defect size multiplier"),
    defect_rate: float = typer.Option(
        round(SEVERSTAL_DEFECT_RATE, 4), "--defect-rate", min=0.0, max=1.0, help="Share of defective images"
    ),
) -> None:
    """Generate a Severstal-format dataset of realistic synthetic steel strips."""
    summary = _run_with_progress(  # ValueError: knobs the generator cannot honour, e.g. a contrast too low to see
        "generating",
        generate_dataset,
        out,
        images,
        seed,
        defect_rate=defect_rate,
        contrast=contrast,
        size_scale=size_scale,
    )
    per_class = ", ".join(f"class {c}: {n}" for c, n in summary.masks_per_class.items())
    stdout_console().print(
        f"wrote {summary.images} images ({summary.defective} defective; {per_class}) to {summary.root} "
        f"in {summary.seconds:.1f} s"
    )


@app.command("import-voc", rich_help_panel=DATA)
def import_voc_command(
    src: Path = typer.Argument(..., help="Pascal VOC folder with images/ and annotations/ (e.g. NEU-DET)"),
    out: str = typer.Option(..., "--out", "-o", help="Empty folder (or s3://bucket/prefix) to write the dataset to"),
    height: int | None = typer.Option(None, "--height", min=1, help="Resize images to this height (with --width)"),
    width: int | None = typer.Option(None, "--width", min=1, help="Resize images to this width (with --height)"),
) -> None:
    """Convert Pascal VOC box annotations into the Severstal layout (boxes become masks, class names kept)."""
    existing_path(src)
    if (height is None) != (width is None):
        fail("--height and --width go together")
    image_size = (height, width) if height is not None and width is not None else None
    summary = _run_with_progress("importing", import_voc, src, out, image_size=image_size)
    classes = ", ".join(f"{i}={name} ({summary.masks_per_class[i]})" for i, name in summary.classes.items())
    stdout_console().print(
        f"imported {summary.images} images, {summary.boxes} boxes into {summary.root} in {summary.seconds:.1f} s; "
        f"classes {classes}"
    )


def _parse_size(text: str) -> tuple[int, int]:
    """``"256x1600"`` → ``(256, 1600)`` (height first, as everywhere in steelqc); anything else exits with code 2."""
    match = re.fullmatch(r"\s*([0-9]+)\s*[xX×]\s*([0-9]+)\s*", text)
    if match is None or min(int(match[1]), int(match[2])) < 1:
        fail(f"--size expects HEIGHTxWIDTH with positive numbers, e.g. 256x256; got {text!r}")
    assert match is not None  # fail() exits; keeps type checkers happy
    return int(match[1]), int(match[2])


def _print_mask_summary(summary: MaskImportSummary) -> None:
    table = Table(title=f"{summary.images} images imported")
    for column in ("ClassId", "class", "images"):
        table.add_column(column)
    for class_id, name in summary.classes.items():
        table.add_row(str(class_id), escape(name), str(summary.masks_per_class[class_id]))
    table.add_row("", "clean", str(summary.clean))
    out = stdout_console()
    out.print(table)
    notes = [f"{summary.resized} resized", f"{summary.padded} padded"]
    if summary.empty_masks_clean:
        notes.append(f"{summary.empty_masks_clean} empty masks in defect folders written clean")
    if summary.missing_masks_clean:
        notes.append(f"{summary.missing_masks_clean} images without a mask written clean")
    if summary.masks_kept_by_area:
        notes.append(f"{summary.masks_kept_by_area} masks too thin for nearest resizing kept by area")
    if summary.renamed:
        notes.append(f"{summary.renamed} renamed")
    out.print(
        f"imported {summary.images} images ({summary.images - summary.clean} defective, {summary.clean} clean) into "
        f"{summary.root} in {summary.seconds:.1f} s at {summary.height}x{summary.width} ({summary.fit}: "
        f"{', '.join(notes)}); source of every image in {summary.mapping_file}"
    )


@app.command("import-masks", rich_help_panel=DATA)
def import_masks_command(
    src: Path = typer.Argument(..., help="Folder of images with a mask image each, e.g. MT_<Class>/Imgs/x.jpg + x.png"),
    out: str = typer.Option(
        ..., "--out", "-o", help="New or empty folder (or s3://bucket/prefix) to write the dataset to"
    ),
    size: str | None = typer.Option(
        None, "--size", help="Output HEIGHTxWIDTH, e.g. 256x256 (default: the most common size)"
    ),
    fit: str = typer.Option(
        "resize",
        "--fit",
        help="resize (area for images, nearest for masks) or pad (bottom/right; shrinks what does not fit)",
    ),
    class_from: str = typer.Option(
        "folder", "--class-from", help="folder (MT_Crack → Crack) or single (one class, defect)"
    ),
    mask_patterns: list[str] | None = typer.Option(
        None,
        "--mask-pattern",
        help=MASK_PATTERN_HELP,
    ),
    clean_folders: list[str] | None = typer.Option(
        None,
        "--clean-folder",
        help=CLEAN_FOLDER_HELP,
    ),
    empty_mask: str = typer.Option(
        "clean", "--empty-mask", help="An empty mask in a defect folder: clean (noted in import_mapping.csv) or error"
    ),
    missing_mask: str = typer.Option(
        "error", "--missing-mask", help="A defect-folder image without a mask: error or clean"
    ),
) -> None:
    """Convert images with mask images (defective where non-zero) into the Severstal layout, at one size."""
    existing_path(src)
    summary = _run_with_progress(  # ValueError: an unknown option value or a malformed mask pattern
        "importing",
        import_masks,
        src,
        out,
        image_size=_parse_size(size) if size is not None else None,
        fit=fit,
        class_from=class_from,
        mask_patterns=mask_patterns or DEFAULT_MASK_PATTERNS,
        clean_folders=clean_folders or DEFAULT_CLEAN_FOLDERS,
        empty_mask=empty_mask,
        missing_mask=missing_mask,
    )
    _print_mask_summary(summary)
