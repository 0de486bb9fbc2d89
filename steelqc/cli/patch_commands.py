"""``steelqc patches``: the patch index (grid, labels, by-image split) of a dataset, as parquet."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from steelqc.cli._app import (
    DATA,
    ConfigOption,
    JsonOption,
    SetOption,
    app,
    run_guarded,
    settings_from_cli,
    stdout_console,
)
from steelqc.data.dataset import Dataset
from steelqc.patches import SPLITS, build_patch_index, write_index


@app.command(rich_help_panel=DATA)
def patches(
    data: str = typer.Argument(..., help="Dataset folder or s3://bucket/prefix (validate it first)"),
    out: Path = typer.Option(..., "--out", "-o", help="Patch index file to write (.parquet)"),
    as_json: bool = JsonOption,
    config: str | None = ConfigOption,
    sets: list[str] | None = SetOption,
) -> None:
    """Cut every image into covering patches, label them, split images into train/val/test, write the index."""
    settings = settings_from_cli(config, sets)
    started = time.perf_counter()
    dataset = run_guarded(Dataset.configured, data, settings.data)
    index = run_guarded(build_patch_index, dataset, settings.patches, workers=settings.data.image_workers)
    run_guarded(write_index, index, out)
    by_split = index.groupby("split").agg(
        images=("image_id", "nunique"), patches=("label", "size"), positive=("label", "sum")
    )
    if as_json:
        splits = {split: {k: int(v) for k, v in row.items()} for split, row in by_split.iterrows()}
        typer.echo(json.dumps({"index": str(out), "patches": len(index), "splits": splits}))
        return
    console = stdout_console()
    for split in SPLITS:
        if split in by_split.index:
            row = by_split.loc[split]
            console.print(
                f"{split:>5}: {row.images} images, {row.patches} patches, {row.positive} defective "
                f"({row.positive / row.patches:.1%})"
            )
    p = settings.patches
    console.print(
        f"wrote {len(index)} patches ({p.size}px, stride {p.stride}, min_defect_pixels {p.min_defect_pixels}) "
        f"of {index['image_id'].nunique()} images to {out} in {time.perf_counter() - started:.1f} s"
    )
