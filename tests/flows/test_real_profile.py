"""The `real` profile on real pixels: a small magnetic-tile subset imported with `import-masks`, validated and
trained end to end (pretrained Lite0, both stages) into a registered version that decides on images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from typer.testing import CliRunner

from steelqc.cli import app
from steelqc.config import load_settings
from steelqc.data.dataset import Dataset
from steelqc.tracking import configure_tracking

PER_DEFECT_FOLDER, CLEAN = 4, 20
TINY_REAL = [
    "--set", "model.input_size=64",
    "--set", "train.epochs_frozen=1",
    "--set", "train.epochs_finetune=1",
    "--set", "validation.min_images=20",
]  # fmt: skip


def _subset(source: Path, out: Path) -> Path:
    """The first images (and masks) of every magnetic-tile folder, in the original layout."""
    for folder in sorted(p for p in source.iterdir() if p.is_dir() and p.name.startswith("MT_")):
        keep = CLEAN if folder.name == "MT_Free" else PER_DEFECT_FOLDER
        target = out / folder.name / "Imgs"
        target.mkdir(parents=True)
        for image in sorted((folder / "Imgs").glob("*.jpg"))[:keep]:
            shutil.copy(image, target)
            if image.with_suffix(".png").exists():
                shutil.copy(image.with_suffix(".png"), target)
    return out


@pytest.mark.slow
def test_real_profile_imports_validates_and_trains_on_magnetic_tile(magnetic_tile: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    data = tmp_path / "dataset"
    imported = runner.invoke(
        app, ["import-masks", str(_subset(magnetic_tile, tmp_path / "src")), "--out", str(data), "--size", "128x128"]
    )
    assert imported.exit_code == 0, imported.output

    validated = runner.invoke(app, ["validate", str(data), "--config", "real", "--set", "validation.min_images=20"])
    assert validated.exit_code == 0, validated.output

    trained = runner.invoke(app, ["train", str(data), "--config", "real", *TINY_REAL])
    assert trained.exit_code == 0, trained.output
    summary = json.loads(trained.stdout.strip().splitlines()[-1])
    assert 0.0 <= summary["image_specificity"] <= 1.0 and 0.0 <= summary["image_recall"] <= 1.0

    settings = load_settings("real")
    assert settings.model.backbone == "efficientnet_lite0" and settings.model.weights == "imagenet"
    configure_tracking(settings)
    dataset = Dataset.open(str(data))
    images = [dataset.image_bytes(i) for i in dataset.image_ids[:3]]
    decisions = mlflow.pyfunc.load_model(f"models:/steelqc/{summary['version']}").predict(
        pd.DataFrame({"image": images})
    )
    assert list(decisions["decision"].isin(["PASS", "HOLD", "FAIL"])) == [True] * 3
