"""``steelqc synth`` and ``steelqc import-voc``: create a Severstal-layout dataset folder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from steelqc.cli._app import app, console, existing_path, fail, run_guarded
from steelqc.data.importers import import_voc
from steelqc.data.synth import SEVERSTAL_DEFECT_RATE, generate_dataset


@contextmanager
def _progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar driven by the library's ``progress(done, total)`` callback."""
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@app.command()
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
    with _progress_bar("generating") as progress:
        summary = run_guarded(
            generate_dataset,
            out,
            images,
            seed,
            defect_rate=defect_rate,
            contrast=contrast,
            size_scale=size_scale,
            progress=progress,
        )
    per_class = ", ".join(f"class {c}: {n}" for c, n in summary.masks_per_class.items())
    console.print(
        f"wrote {summary.images} images ({summary.defective} defective; {per_class}) to {summary.root} "
        f"in {summary.seconds:.1f} s"
    )


@app.command("import-voc")
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
    with _progress_bar("importing") as progress:
        summary = run_guarded(import_voc, src, out, image_size=image_size, progress=progress)
    classes = ", ".join(f"{i}={name} ({summary.masks_per_class[i]})" for i, name in summary.classes.items())
    console.print(
        f"imported {summary.images} images, {summary.boxes} boxes into {summary.root} in {summary.seconds:.1f} s; "
        f"classes {classes}"
    )
