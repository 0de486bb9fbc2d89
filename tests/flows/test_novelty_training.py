"""End to end: `steelqc train` with `novelty.enabled` logs the bank with the version and the version applies it."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from steelqc.cli import app
from steelqc.config import load_settings
from steelqc.data.dataset import Dataset
from steelqc.monitoring import model_reference
from steelqc.pyfunc import load_inspector
from steelqc.tracking import configure_tracking

TINY = [
    "--set", "model.input_size=32",
    "--set", "train.epochs_frozen=1",
    "--set", "train.epochs_finetune=0",
    "--set", "train.batch_size=32",
    "--set", "data.image_workers=2",
    "--set", "novelty.enabled=true",
    "--set", "novelty.bank_size=50",
]  # fmt: skip


@pytest.mark.slow
def test_training_with_novelty_logs_the_bank_with_the_version_and_the_version_applies_it(
    synthetic_dataset: Path,
) -> None:
    trained = CliRunner().invoke(app, ["train", str(synthetic_dataset), "--config", "demo", *TINY])
    assert trained.exit_code == 0, trained.output
    summary = json.loads(trained.stdout.strip().splitlines()[-1])

    configure_tracking(load_settings("demo"))
    run = MlflowClient().get_run(summary["run_id"])
    assert run.data.metrics["novelty.bank_size"] == 50 and run.data.metrics["novelty.build_seconds"] >= 0
    assert 0 <= run.data.metrics["novelty.hold_rate"] <= 0.03 and "novelty.note" in run.data.tags
    tags = MlflowClient().get_model_version("steelqc", summary["version"]).tags
    assert {"novelty_threshold", "novelty_hold_bound", "novelty_bank_size"} <= set(tags)

    inspector, _ = load_inspector(f"models:/steelqc/{summary['version']}")
    assert inspector.novelty is not None and len(inspector.novelty.bank) == 50
    assert inspector.novelty.threshold == pytest.approx(float(tags["novelty_threshold"]), abs=1e-6)
    reference, _ = model_reference(summary["run_id"])
    assert {"novelty", "novel"} <= set(reference.columns)

    dataset = Dataset.open(str(synthetic_dataset))
    images = pd.DataFrame({"image": [dataset.load_image(i) for i in dataset.image_ids[:3]]})
    out = mlflow.pyfunc.load_model(f"models:/steelqc/{summary['version']}").predict(images)
    assert {"max_novelty", "reason"} <= set(out.columns) and set(out["reason"]) <= {"", "novel pattern"}
