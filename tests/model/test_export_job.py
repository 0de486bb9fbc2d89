"""`steelqc export` on a registered version (real SQLite MLflow): parity on its validation images, tags, the
export stored beside the Keras model, the pyfunc and `steelqc inspect --runtime` using it, and every
fall-back to Keras (failed check, corrupted file) saying why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from steelqc import export_job
from steelqc.cli import app
from steelqc.config import Settings
from steelqc.data.dataset import Dataset
from steelqc.data.images import encode_png
from steelqc.export_job import Parity, compare_results, logged_model_id
from steelqc.inference import ImageResult, Inspector
from steelqc.model import build_model
from steelqc.patches import write_index
from steelqc.pyfunc import load_inspector, log_pyfunc_model, takes_runtime_setting
from steelqc.registry import register_version
from steelqc.runtimes import ExportedModel
from steelqc.thresholds import Thresholds
from steelqc.tracking import configure_tracking, ensure_experiment

from tiny_model_data import thresholds_between, tiny_settings

NAME = "steelqc-export"


@pytest.fixture(scope="module")
def registry(generated: tuple[Dataset, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Version 1 of NAME: a small CNN whose run records work_dir (with the patch index) and dataset_source."""
    dataset, index = generated
    root = tmp_path_factory.mktemp("export-registry")
    settings = tiny_settings(state_dir=str(root), tracking__tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    write_index(index, root / "work" / "patch_index.parquet")
    keras.utils.set_random_seed(0)
    model = build_model(settings.model, settings.patches.size)
    score = model.get_layer("score")
    score.set_weights([w * 40 for w in score.get_weights()])  # spread an untrained model's scores over (0, 1)
    val_images = [dataset.load_image(i) for i in index.loc[index["split"] == "val", "image_id"].unique()]
    probe = Inspector(model, Thresholds(0.5, 0.9, 1, 1, 1, 0.5, 1, 1, True, "probe"), 32, 32, "reflect")
    thresholds = thresholds_between(np.concatenate([r.patch_scores for r in probe.inspect(val_images)]))
    configure_tracking(settings)
    try:
        with mlflow.start_run(experiment_id=ensure_experiment(settings, "export")):
            mlflow.set_tags({"work_dir": str(root / "work"), "dataset_source": dataset.root})
            info = log_pyfunc_model(model, thresholds, settings.patches, val_images[0])
        register_version(info.model_uri, NAME, {})
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    return settings


@pytest.fixture
def tracking(registry: Settings) -> Iterator[list[str]]:
    """Tracking pointed at the module's registry; the CLI flags that do the same."""
    configure_tracking(registry)
    yield ["--set", f"tracking.tracking_uri={registry.mlflow_tracking_uri}"]


def stored_export(fmt: str) -> Path:
    """The export folder inside version 1's logged model (local artefact store)."""
    client = mlflow.MlflowClient()
    location = client.get_logged_model(logged_model_id(client.get_model_version(NAME, "1"))).artifact_location
    return Path(url2pathname(urlparse(location).path)) / "artifacts" / "exports" / fmt


class Shifted(ExportedModel):
    """An export whose scores are off by ``shift``: what a broken conversion looks like."""

    runtime = "openvino"

    def __init__(self, exported: ExportedModel, shift: float) -> None:
        self.exported, self.shift = exported, shift

    def predict_both(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores, embeddings = self.exported.predict_both(x)
        return scores + self.shift, embeddings


def test_a_failed_parity_check_keeps_keras_says_why_and_stores_nothing(
    tracking: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    load_runtime = export_job.load_runtime
    monkeypatch.setattr(export_job, "load_runtime", lambda folder: Shifted(load_runtime(folder), 1e-3))
    result = CliRunner().invoke(app, ["export", f"models:/{NAME}/1", "--format", "onnx", *tracking])
    assert result.exit_code == 1, result.output
    (line,) = result.output.strip().splitlines()
    assert (
        "onnx export of steelqc-export v1 not accepted, scoring stays keras: max |score difference| 1.00e-03 > 0.0001"
        in line
    )
    tags = mlflow.MlflowClient().get_model_version(NAME, "1").tags
    assert tags["export.onnx.parity"] == "failed" and "max |score difference|" in tags["export.onnx.reason"]
    assert "export.onnx.path" not in tags and not stored_export("onnx").exists()


def test_export_passes_parity_is_stored_tagged_and_used_by_pyfunc_and_inspect(
    tracking: list[str], generated: tuple[Dataset, pd.DataFrame], tmp_path: Path
) -> None:
    result = CliRunner().invoke(app, ["export", f"models:/{NAME}/1", "--format", "openvino", *tracking])
    assert result.exit_code == 0, result.output
    assert "openvino export of steelqc-export v1 passed parity on" in result.output
    tags = mlflow.MlflowClient().get_model_version(NAME, "1").tags
    assert tags["export.openvino.parity"] == "passed" and tags["export.openvino.differing_decisions"] == "0"
    assert float(tags["export.openvino.max_abs_diff"]) <= 1e-4 and int(tags["export.openvino.patches"]) > 0
    assert tags["export.openvino.path"] == "artifacts/exports/openvino" and stored_export("openvino").is_dir()

    dataset, index = generated
    images = [dataset.load_image(i) for i in index.loc[index["split"] == "test", "image_id"].unique()]
    pyfunc = mlflow.pyfunc.load_model(f"models:/{NAME}/1")  # default: the passed export
    assert pyfunc.unwrap_python_model().runtime == "openvino"
    keras_inspector, meta = load_inspector(f"models:/{NAME}/1")
    assert meta.runtime == "keras" and meta.runtime_note is None
    out = pyfunc.predict(pd.DataFrame({"image": [encode_png(i) for i in images]}))
    expected = keras_inspector.inspect(images)
    assert list(out["decision"]) == [r.decision for r in expected]
    np.testing.assert_allclose(out["worst_score"], [r.worst_score for r in expected], atol=1e-4)

    again = CliRunner().invoke(app, ["export", f"models:/{NAME}/1", "--format", "openvino", *tracking])
    assert again.exit_code == 2 and "already has an openvino export that passed" in again.output

    folder = tmp_path / "strips"
    folder.mkdir()
    for i, image in enumerate(images):
        (folder / f"s{i}.png").write_bytes(encode_png(image))
    inspect = ["inspect", str(folder), "--out", str(tmp_path / "out"), "--model", f"models:/{NAME}/1",
               "--image-size", "any", "--no-log", *tracking]  # fmt: skip
    used = CliRunner().invoke(app, inspect)
    assert used.exit_code == 0 and "(v1, openvino, patches mode)" in used.output, used.output

    weights = stored_export("openvino") / "model.bin"
    original = weights.read_bytes()
    try:
        weights.write_bytes(original[: len(original) // 2])  # a truncated copy
        fallen = CliRunner().invoke(app, [*inspect, "--runtime", "openvino"])
        assert fallen.exit_code == 0 and "(v1, keras, patches mode)" in fallen.output, fallen.output
        assert "model.bin does not match its checksum" in fallen.output and "scoring with keras" in fallen.output
    finally:
        weights.write_bytes(original)


def result(scores: list[float], decisions: list[str]) -> ImageResult:
    return ImageResult("PASS", max(scores), (0, 0), np.array(scores), [(0, 0)] * len(scores), np.array(decisions))


def test_parity_needs_scores_within_the_tolerance_and_equal_decisions() -> None:
    reference = [result([0.1, 0.6], ["PASS", "HOLD"])]
    assert compare_results(reference, [result([0.10005, 0.6], ["PASS", "HOLD"])], 1e-4).passed
    off = compare_results(reference, [result([0.1002, 0.6], ["PASS", "HOLD"])], 1e-4)
    assert not off.passed and off.reason == "max |score difference| 2.00e-04 > 0.0001"
    flipped = compare_results(reference, [result([0.1, 0.6], ["PASS", "FAIL"])], 1e-4)
    assert not flipped.passed and flipped.reason == "1 of 2 patch decisions differ"


def test_a_nan_score_or_nothing_compared_never_passes() -> None:
    nan = compare_results([result([0.1], ["PASS"])], [result([float("nan")], ["PASS"])], 1e-4)
    assert not nan.passed and nan.max_abs_diff == np.inf
    assert compare_results([], [], 1e-4) == Parity(0, 0, 0.0, 0, 1e-4)
    assert compare_results([], [], 1e-4).reason == "no validation patches to compare"


def test_a_version_logged_before_exports_scores_with_keras_and_is_not_exported(
    tracking: list[str], registry: Settings, generated: tuple[Dataset, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    log_model = mlflow.pyfunc.log_model
    monkeypatch.setattr(
        mlflow.pyfunc, "log_model", lambda **kw: log_model(**{k: v for k, v in kw.items() if k != "model_config"})
    )
    image = generated[0].load_image(str(generated[1]["image_id"].iloc[0]))
    with mlflow.start_run(experiment_id=ensure_experiment(registry, "export")):
        info = log_pyfunc_model(build_model(registry.model, 32), Thresholds(0.5, 0.9, 1, 1, 1, 0.5, 1, 1, True, "old"),
                                registry.patches, image)  # fmt: skip
    version = register_version(info.model_uri, NAME, {}).version
    assert not takes_runtime_setting(f"models:/{NAME}/{version}")
    _, meta = load_inspector(f"models:/{NAME}/{version}", runtime="openvino")
    assert meta.runtime == "keras"
    refused = CliRunner().invoke(app, ["export", f"models:/{NAME}/{version}", *tracking])
    assert refused.exit_code == 2 and "was logged before exports" in refused.output


def test_a_strip_mode_version_exports_checks_parity_and_scores_in_strip_mode(
    tracking: list[str], registry: Settings, generated: tuple[Dataset, pd.DataFrame]
) -> None:
    """The mode is the version's: its export is the backbone for any image size, checked and used in strip mode."""
    dataset, index = generated
    val_images = [dataset.load_image(i) for i in index.loc[index["split"] == "val", "image_id"].unique()]
    keras.utils.set_random_seed(1)
    model = build_model(registry.model, 32)
    score = model.get_layer("score")
    score.set_weights([w * 40 for w in score.get_weights()])
    probe = Inspector(model, Thresholds(0.5, 0.9, 1, 1, 1, 0.5, 1, 1, True, "probe"), 32, 32, "reflect", mode="strip")
    thresholds = thresholds_between(np.concatenate([r.patch_scores for r in probe.inspect(val_images)]))
    with mlflow.start_run(experiment_id=ensure_experiment(registry, "export")):
        mlflow.set_tags({"work_dir": str(registry.state_dir / "work"), "dataset_source": dataset.root})
        info = log_pyfunc_model(model, thresholds, registry.patches, val_images[0], "strip")
    version = register_version(info.model_uri, NAME, {}).version
    uri = f"models:/{NAME}/{version}"

    result = CliRunner().invoke(app, ["export", uri, "--format", "onnx", *tracking])
    assert result.exit_code == 0, result.output
    tags = mlflow.MlflowClient().get_model_version(NAME, str(version)).tags
    assert tags["export.onnx.parity"] == "passed" and tags["export.onnx.mode"] == "strip"
    keras_inspector, meta = load_inspector(uri)
    assert keras_inspector.mode == "strip" and meta.geometry["mode"] == "strip"
    exported_inspector, meta = load_inspector(uri, runtime="auto")
    assert meta.runtime == "onnx" and exported_inspector.mode == "strip"
    images = [dataset.load_image(i) for i in index.loc[index["split"] == "test", "image_id"].unique()]
    expected, got = keras_inspector.inspect(images), exported_inspector.inspect(images)
    assert [r.decision for r in got] == [r.decision for r in expected]
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_allclose(a.patch_scores, b.patch_scores, atol=1e-4)
