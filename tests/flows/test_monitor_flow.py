"""End to end: the champion carries a reference set; production batches are inspected into the patch log
(Prefect flow and CLI); the monitor flow / command reports no drift on a same-distribution batch and drift
on a blurred one, logs both to the ``steelqc-monitoring`` MLflow experiment, and in ephemeral mode only reports.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from flows.inspect_batch import inspect_batch
from flows.monitor import monitor
from steelqc.cli import app
from steelqc.config import load_settings
from steelqc.data.dataset import Dataset
from steelqc.data.images import encode_jpeg
from steelqc.data.synth import JPEG_QUALITY, generate_strip
from steelqc.monitoring import PatchLog, embedding_columns, log_reference, model_version_of
from steelqc.patches import build_patch_index
from steelqc.pyfunc import load_inspector
from steelqc.tracking import configure_tracking

pytestmark = pytest.mark.slow
CHAMPION = "models:/steelqc@champion"


def _write_strips(folder: Path, seed: int, count: int, **shift: float) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        classes = (1 + i % 4,) if rng.random() < 0.5 else ()
        (folder / f"strip{i:02d}.jpg").write_bytes(
            encode_jpeg(generate_strip(rng, defective_classes=classes, **shift)[0], JPEG_QUALITY)
        )
    return folder


@pytest.fixture
def champion_with_reference(tiny_champion_db: Path, synthetic_dataset_factory, tmp_path: Path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """A copy of the tiny champion registry whose v1 run carries a reference set built by ``log_reference``."""
    db = tmp_path / "mlflow.db"
    shutil.copy(tiny_champion_db, db)
    overrides = {"state_dir": str(tmp_path / "state"), "tracking.tracking_uri": f"sqlite:///{db}",
                 "patches.stride": 256, "patches.val_fraction": 0.5, "patches.test_fraction": 0.15,
                 "monitoring.trigger_retrain": True}  # fmt: skip
    settings = load_settings(None, overrides)
    configure_tracking(settings)
    dataset = Dataset.open(str(synthetic_dataset_factory(40, 11)))
    index = build_patch_index(dataset, settings.patches, workers=2)
    inspector, _ = load_inspector(CHAMPION)
    _, run_id = model_version_of(CHAMPION)
    with mlflow.start_run(run_id=run_id):
        reference = log_reference(inspector.model, dataset, index, settings.patches)
    assert len(reference) == (index["split"] == "val").sum() and len(embedding_columns(reference)) == 8
    return {k: str(v) for k, v in overrides.items()}


def test_inspect_and_monitor_flows(champion_with_reference: dict[str, str], tmp_path: Path) -> None:
    overrides: dict[str, object] = dict(champion_with_reference)
    same = _write_strips(tmp_path / "same", 21, 16)
    blurred = _write_strips(tmp_path / "blurred", 22, 16, blur_sigma=2.0)
    (blurred / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")

    steady = {**overrides, "monitoring.log_dir": str(tmp_path / "log-same")}
    summary = inspect_batch(str(same), config="demo", out=str(tmp_path / "out-same"), overrides=steady)
    assert sum(summary["counts"].values()) == 16 and summary["counts"]["ERROR"] == 0
    assert summary["model_version"] == "1" and summary["patch_log_files"]
    logged = PatchLog(tmp_path / "log-same").read()
    assert len(logged) == 16 * 7 and set(logged["model_version"]) == {"1"} and embedding_columns(logged)

    quiet = monitor(config="demo", overrides=steady)
    assert quiet["drift_detected"] is False and quiet["action"] == "no drift", quiet["reasons"]
    assert quiet["embedding_drift"] is False and Path(quiet["html_path"]).exists()

    shifted = {**overrides, "monitoring.log_dir": str(tmp_path / "log-blurred")}
    summary = inspect_batch(str(blurred), config="demo", out=str(tmp_path / "out-blurred"), overrides=shifted)
    assert summary["counts"]["ERROR"] == 1 and summary["errors"][0]["image"] == "broken.jpg"
    alarm = monitor(config="demo", overrides=shifted)
    assert alarm["drift_detected"] is True and "blur" in alarm["drifted_columns"]
    assert "ephemeral mode" in alarm["action"] and alarm["retrain_flow_run_id"] is None

    configure_tracking(load_settings(None, overrides))
    experiment = mlflow.get_experiment_by_name("steelqc-monitoring")
    runs = mlflow.search_runs([experiment.experiment_id], order_by=["start_time ASC"])
    assert runs["metrics.drift_detected"].tolist() == [0.0, 1.0]
    artifacts = [a.path for a in MlflowClient().list_artifacts(alarm["mlflow_run_id"], "drift")]
    assert artifacts == ["drift/drift_report.html", "drift/drift_summary.json"]


def test_cli_inspect_then_monitor(champion_with_reference: dict[str, str], tmp_path: Path) -> None:
    sets = [arg for key, value in champion_with_reference.items() for arg in ("--set", f"{key}={value}")]
    log_dir = ["--set", f"monitoring.log_dir={tmp_path / 'log'}"]
    images = _write_strips(tmp_path / "bright", 31, 12, brightness=35.0)
    runner = CliRunner()

    inspected = runner.invoke(app, ["inspect", str(images), "--out", str(tmp_path / "out"), *sets, *log_dir])
    assert inspected.exit_code == 0, inspected.output
    decisions = pd.read_csv(tmp_path / "out" / "decisions.csv")
    assert len(decisions) == 12 and set(decisions["decision"]) <= {"PASS", "HOLD", "FAIL"}
    assert len(json.loads((tmp_path / "out" / "decisions.json").read_text())) == 12

    checked = runner.invoke(app, ["monitor", "--out", str(tmp_path / "report"), *sets, *log_dir])
    assert checked.exit_code == 1, checked.output
    assert "drift detected" in checked.output and "intensity_mean" in checked.output
    summary = json.loads((tmp_path / "report" / "drift_summary.json").read_text())
    assert summary["drift_detected"] and "intensity_mean" in summary["drifted_columns"]

    empty = runner.invoke(app, ["monitor", "--since", "2000-01-01", "--until", "2000-01-02", *sets, *log_dir])
    assert empty.exit_code == 2 and "production patch log has no rows" in empty.output
    bad = runner.invoke(app, ["inspect", str(images), "--out", str(tmp_path / "x"), "--image-size", "wide", *sets])
    assert bad.exit_code == 2 and "HEIGHTxWIDTH" in bad.output


def test_drift_triggers_the_retrain_deployment(
    champion_with_reference: dict[str, str], prefect_server: str, tmp_path: Path
) -> None:
    """With a Prefect API and trigger_retrain on, drift starts a run of ``retrain/retrain`` without waiting for it."""
    from prefect import get_client

    from flows.retrain import retrain

    deployment_id = retrain.to_deployment(name="retrain").apply()
    overrides: dict[str, object] = {**champion_with_reference, "monitoring.log_dir": str(tmp_path / "log")}
    blurred = _write_strips(tmp_path / "blurred", 41, 12, blur_sigma=2.0)
    inspect_batch(str(blurred), config="demo", out=str(tmp_path / "out"), overrides=overrides)

    alarm = monitor(config="demo", overrides=overrides)

    assert alarm["drift_detected"] is True and alarm["retrain_flow_run_id"], alarm
    assert alarm["action"].startswith("drift detected; started retrain/retrain run"), alarm["action"]
    with get_client(sync_client=True) as client:
        triggered = client.read_flow_run(alarm["retrain_flow_run_id"])
    assert triggered.deployment_id == deployment_id
    assert "drift-triggered" in triggered.tags and triggered.parameters["config"] == "demo"
    assert triggered.state is not None and triggered.state.is_scheduled(), triggered.state  # no worker picks it up
