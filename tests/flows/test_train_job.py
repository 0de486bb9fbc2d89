"""End to end: `steelqc train` on generated data registers a version with metrics, tags, plots and a working pyfunc;
`steelqc evaluate` re-scores it on the same test split and gets the same numbers."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from steelqc.cli import app
from steelqc.config import load_settings
from steelqc.data.dataset import Dataset
from steelqc.monitoring import model_reference
from steelqc.patches import read_index
from steelqc.registry import VERSION_TAGS
from steelqc.tracking import configure_tracking, metrics_on_test_split
from steelqc.train_job import score_model_on_split

TINY = [
    "--set", "model.input_size=32",
    "--set", "train.epochs_frozen=1",
    "--set", "train.epochs_finetune=0",
    "--set", "train.batch_size=32",
    "--set", "data.image_workers=2",
]  # fmt: skip


def _artifact_paths(client: MlflowClient, run_id: str, path: str = "") -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path):
        found.extend(_artifact_paths(client, run_id, item.path) if item.is_dir else [item.path])
    return found


@pytest.mark.slow
def test_train_registers_a_version_that_decides_and_evaluate_reproduces_it(
    synthetic_dataset: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    trained = runner.invoke(app, ["train", str(synthetic_dataset), "--config", "demo", *TINY])
    assert trained.exit_code == 0, trained.output
    summary = json.loads(trained.stdout.strip().splitlines()[-1])
    assert summary["version"] == "1" and {"patch_recall", "patch_precision", "patch_specificity"} <= set(summary)
    assert f"run id:      {summary['run_id']}" in trained.stdout

    configure_tracking(load_settings("demo"))
    client = MlflowClient()
    run = client.get_run(summary["run_id"])
    assert mlflow.get_experiment(run.info.experiment_id).name == "steelqc-synthetic-severstal"
    assert run.data.params["model.input_size"] == "32" and run.data.params["train.batch_size"] == "32"
    assert {"class_weight.0", "class_weight.1"} <= set(run.data.params)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/pr_auc")] == [0]
    for name in ("patch_recall", "patch_precision", "patch_specificity", "patch_pr_auc", "image_recall"):
        assert f"test/{name}" in run.data.metrics
    assert "val/t_pass" in run.data.metrics
    assert run.data.tags["data_hash"] and run.data.tags["validation.success"] == "True"
    assert run.inputs.dataset_inputs and run.inputs.dataset_inputs[0].dataset.name == "synthetic-severstal-patches"
    artifacts = _artifact_paths(client, run.info.run_id)
    assert {"evaluation/report.json", "validation/summary.json", "thresholds.json"} <= set(artifacts)
    assert len([a for a in artifacts if a.startswith("evaluation/plots/") and a.endswith(".png")]) >= 4

    version = client.get_model_version("steelqc", "1")
    assert set(VERSION_TAGS) <= set(version.tags) and version.run_id == run.info.run_id
    assert version.tags["data_hash"] == run.data.tags["data_hash"]
    assert float(version.tags["recall"]) == pytest.approx(run.data.metrics["test/patch_recall"], abs=1e-6)

    dataset = Dataset.open(str(synthetic_dataset))
    images = [dataset.image_bytes(i) for i in dataset.image_ids[:3]]
    decisions = mlflow.pyfunc.load_model("models:/steelqc/1").predict(pd.DataFrame({"image": images}))
    assert len(decisions) == 3 and set(decisions["decision"]) <= {"PASS", "HOLD", "FAIL"}
    scores = [json.loads(s) for s in decisions["patch_scores"]]
    assert all(len(s) == 12 for s in scores)
    assert np.allclose(decisions["worst_score"], [max(p["score"] for p in s) for s in scores], atol=1e-5)

    evaluated = runner.invoke(app, ["evaluate", "models:/steelqc/1", str(synthetic_dataset), "--config", "demo", *TINY])
    assert evaluated.exit_code == 0, evaluated.output
    rescored = json.loads(evaluated.stdout.strip().splitlines()[-1])
    for name in ("patch_recall", "patch_precision", "patch_specificity", "image_recall"):
        assert rescored[name] == pytest.approx(summary[name], abs=1e-9)

    # the gate's path: the registered model re-scored on the training run's own index
    work = Path(run.data.tags["work_dir"])
    settings = load_settings("demo", {"model.input_size": 32, "data.image_workers": 2})
    index = read_index(work / "patch_index.parquet")
    clean = Dataset.open(str(synthetic_dataset))
    report = score_model_on_split("models:/steelqc/1", clean, index, settings, tmp_path / "champion")
    assert report.metrics["patch_recall"] == pytest.approx(summary["patch_recall"], abs=1e-9)
    with pytest.raises(ValueError, match="128px patches"):
        score_model_on_split("models:/steelqc/1", clean, index.assign(size=128), settings, tmp_path / "other")


@pytest.mark.slow
def test_pretrained_lite0_trains_in_two_stages_and_its_version_decides(synthetic_dataset: Path) -> None:
    lite0 = [
        "--set", "model.backbone=efficientnet_lite0",
        "--set", "model.weights=imagenet",
        "--set", "model.input_size=64",
        "--set", "model.fine_tune_blocks=1",
        "--set", "train.epochs_frozen=1",
        "--set", "train.epochs_finetune=1",
        "--set", "train.batch_size=32",
        "--set", "data.image_workers=2",
    ]  # fmt: skip
    trained = CliRunner().invoke(app, ["train", str(synthetic_dataset), "--config", "demo", *lite0])
    assert trained.exit_code == 0, trained.output
    summary = json.loads(trained.stdout.strip().splitlines()[-1])

    configure_tracking(load_settings("demo"))
    client = MlflowClient()
    run = client.get_run(summary["run_id"])
    assert run.data.params["model.backbone"] == "efficientnet_lite0" and run.data.params["model.weights"] == "imagenet"
    assert len(client.get_metric_history(run.info.run_id, "val/pr_auc")) == 2  # one epoch per stage
    dataset = Dataset.open(str(synthetic_dataset))
    images = [dataset.image_bytes(i) for i in dataset.image_ids[:2]]
    decisions = mlflow.pyfunc.load_model(f"models:/steelqc/{summary['version']}").predict(
        pd.DataFrame({"image": images})
    )
    assert len(decisions) == 2 and set(decisions["decision"]) <= {"PASS", "HOLD", "FAIL"}


@pytest.mark.slow
def test_a_strip_mode_model_is_thresholded_evaluated_and_served_in_strip_mode(synthetic_dataset: Path) -> None:
    """The mode is the registered model's: thresholds on strip-mode validation scores, the report's agreement
    with patch mode, the novelty guard and the drift reference built from strip-mode features, the pyfunc and
    `steelqc evaluate` scoring in strip mode."""
    # demo's 256-px patches at 32 px input: 128-px cells
    strip = [*TINY, "--set", "inference.mode=strip", "--set", "novelty.enabled=true"]
    trained = CliRunner().invoke(app, ["train", str(synthetic_dataset), "--config", "demo", *strip])
    assert trained.exit_code == 0, trained.output
    summary = json.loads(trained.stdout.strip().splitlines()[-1])

    configure_tracking(load_settings("demo"))
    client = MlflowClient()
    run = client.get_run(summary["run_id"])
    assert run.data.params["inference.mode"] == "strip"
    metrics = metrics_on_test_split(run.data.metrics)
    assert 0.0 <= metrics["mode_agreement"] <= 1.0
    assert metrics["strip_mode_patch_recall"] == pytest.approx(metrics["patch_recall"], abs=1e-9)
    assert {"patches_mode_patch_recall", "patches_mode_patch_specificity", "mode_max_abs_score_diff"} <= set(metrics)

    uri = f"models:/steelqc/{summary['version']}"
    pyfunc = mlflow.pyfunc.load_model(uri)
    inspector = pyfunc.unwrap_python_model().inspector
    assert inspector.mode == "strip" and inspector.novelty is not None and inspector.novelty.bank.mode == "strip"
    dataset = Dataset.open(str(synthetic_dataset))
    decisions = pyfunc.predict(pd.DataFrame({"image": [dataset.image_bytes(i) for i in dataset.image_ids[:2]]}))
    assert all(len(json.loads(s)) == 12 for s in decisions["patch_scores"])  # the patch grid, scored from the strip
    assert all("novelty" in patch for s in decisions["patch_scores"] for patch in json.loads(s))
    reference, _ = model_reference(summary["run_id"])
    assert {"novelty", "novel"} <= set(reference.columns)

    evaluated = CliRunner().invoke(app, ["evaluate", uri, str(synthetic_dataset), "--config", "demo", *TINY])
    assert evaluated.exit_code == 0, evaluated.output
    rescored = json.loads(evaluated.stdout.strip().splitlines()[-1])
    for name in ("patch_recall", "patch_specificity", "image_recall"):
        assert rescored[name] == pytest.approx(summary[name], abs=1e-9)
