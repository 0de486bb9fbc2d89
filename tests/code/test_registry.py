"""MLflow tracking, the decision-making pyfunc, registration tags and aliases — against a real SQLite store."""

from __future__ import annotations

import base64
import json
import re
import socket
import time
import warnings
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest

from steelqc.config import load_settings
from steelqc.data.errors import ImageDecodeError
from steelqc.data.images import encode_png
from steelqc.inference import Inspector
from steelqc.promotion import alias_version
from steelqc.pyfunc import load_inspector, log_pyfunc_model
from steelqc.pyfunc_io import images_from_model_input
from steelqc.registry import register_version, version_tags
from steelqc.thresholds import Thresholds
from steelqc.tracking import (
    EXPERIMENT_KIND_TAG,
    TrackingUnavailableError,
    configure_tracking,
    ensure_experiment,
    experiment_link,
    experiment_name,
    flatten_settings,
    git_commit,
    log_epoch_metrics,
    log_lineage,
    run_description,
    run_name,
)

PATCH, STRIDE = 32, 16


def brightest_pixel_model() -> keras.Model:
    """Score = brightest pixel of the patch / 255: decisions on crafted images are known exactly."""
    inputs = keras.Input((PATCH, PATCH, 1))
    return keras.Model(inputs, keras.layers.Rescaling(1.0 / 255.0)(keras.layers.GlobalMaxPooling2D()(inputs)))


def thresholds(t_pass: float, t_fail: float) -> Thresholds:
    return Thresholds(t_pass, t_fail, 1.0, 1.0, 1.0, 0.5, 10, 10, True, "crafted for tests")


def strip(value: int | None = None) -> np.ndarray:
    image = np.full((64, 160), 20, np.uint8)
    if value is not None:
        image[40, 100] = value
    return image


def test_default_tracking_is_sqlite_in_the_state_dir_with_artifacts_beside_it(isolated_state: Path) -> None:
    settings = load_settings()
    uri = configure_tracking(settings)
    assert uri == f"sqlite:///{isolated_state / 'mlflow.db'}" and mlflow.get_tracking_uri() == uri
    experiment_id = ensure_experiment(settings, "synthetic")
    assert ensure_experiment(settings, "synthetic") == experiment_id
    experiment = mlflow.get_experiment(experiment_id)
    assert experiment.name == "steelqc-synthetic"
    assert experiment.artifact_location == (isolated_state / "mlartifacts" / "steelqc-synthetic").as_uri()


def test_unreachable_tracking_server_fails_fast_with_a_clear_message() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    settings = load_settings(overrides={"tracking.tracking_uri": f"http://127.0.0.1:{port}"})
    started = time.monotonic()
    with pytest.raises(TrackingUnavailableError, match=rf"127\.0\.0\.1:{port} is unreachable.*MLFLOW_TRACKING_URI"):
        configure_tracking(settings)
    assert time.monotonic() - started < 10


def test_params_are_the_full_config_flattened() -> None:
    settings = load_settings("demo")
    flat = flatten_settings(settings)
    assert flat["train.batch_size"] == "32" and flat["model.backbone"] == "small_cnn"
    assert flat["thresholds.confidence"] == "0.9" and flat["data.root"] == "None"
    sections = {key.split(".")[0] for key in flat}
    assert {"data", "patches", "model", "train", "thresholds", "tracking", "gate"} <= sections


def test_epoch_metrics_are_logged_per_step_under_their_split() -> None:
    configure_tracking(load_settings())
    with mlflow.start_run() as run:
        log_epoch_metrics(0, {"loss": 0.7, "val_pr_auc": np.float32(0.5), "note": "ignored"})
        log_epoch_metrics(1, {"loss": 0.4, "val_pr_auc": 0.8})
    client = mlflow.MlflowClient()
    history = client.get_metric_history(run.info.run_id, "val/pr_auc")
    assert [(m.step, round(m.value, 3)) for m in history] == [(0, 0.5), (1, 0.8)]
    assert set(client.get_run(run.info.run_id).data.metrics) == {"train/loss", "val/pr_auc"}


def test_experiments_are_model_development_experiments_even_when_made_before() -> None:
    settings = load_settings()
    configure_tracking(settings)
    client = mlflow.MlflowClient()
    made_here = ensure_experiment(settings, "unit")
    older = client.create_experiment(experiment_name(settings.tracking, "older"))  # as steelqc did before the tag
    assert ensure_experiment(settings, "older") == older
    for experiment_id in (made_here, older):
        assert client.get_experiment(experiment_id).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_run_name_and_description_say_data_backbone_and_profile() -> None:
    settings = load_settings("demo")
    assert run_name("train", "magnetic-tile", settings) == (
        f"train magnetic-tile {settings.model.backbone}@{settings.model.input_size} (demo)"
    )
    description = run_description("retrain", "magnetic-tile", "s3://coils/mt", settings)
    assert "**magnetic-tile** (`s3://coils/mt`)" in description and "profile **demo**" in description
    assert f"`{settings.model.backbone}`" in description and "`test/…`" in description
    assert experiment_link("http://127.0.0.1:5000/", "7") == (
        "http://127.0.0.1:5000/#/experiments/7?workflowType=machine_learning"  # MLflow 3.17's "Model training" layout
    )


def test_model_input_forms() -> None:
    image = strip(250)
    png = encode_png(image)
    forms = [
        pd.DataFrame({"image": [png, png]}),
        pd.DataFrame({"image": [base64.b64encode(png).decode()] * 2}),
        {"image": [png, image]},
        np.stack([image, image]),
        [image.tolist(), png],
    ]
    for form in forms:
        decoded = images_from_model_input(form)
        assert len(decoded) == 2 and all(np.array_equal(d, image) for d in decoded)
    assert len(images_from_model_input(image)) == 1
    with pytest.raises(ImageDecodeError, match="column named 'image'"):
        images_from_model_input(pd.DataFrame({"pixels": [png]}))
    with pytest.raises(ImageDecodeError, match="not base64"):
        images_from_model_input(pd.DataFrame({"image": ["%%%"]}))


def test_lineage_declares_the_dataset_source_and_schema_so_mlflow_has_nothing_to_warn_about(tmp_path: Path) -> None:
    settings = load_settings()
    configure_tracking(settings)
    index = pd.DataFrame(
        {
            "image_id": ["a.jpg", "a.jpg"],
            "y": [0, 0],
            "x": [0, 128],
            "label": np.array([0, 1], np.int8),
            "split": "train",
        }
    )
    with (
        mlflow.start_run(experiment_id=ensure_experiment(settings, "unit")) as run,
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        log_lineage("hash", {"success": True}, index, str(tmp_path), "local")
        log_lineage("hash", {"success": True}, index, "s3://bucket/data", "remote")
    assert [str(w.message) for w in caught if issubclass(w.category, UserWarning)] == []
    inputs = {i.dataset.name: i.dataset for i in mlflow.get_run(run.info.run_id).inputs.dataset_inputs}
    assert (inputs["local-patches"].source_type, inputs["remote-patches"].source_type) == ("local", "s3")
    assert json.loads(inputs["local-patches"].source)["uri"] == str(tmp_path)


def test_git_commit_is_a_hash_or_unknown() -> None:
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", git_commit())


def test_logged_pyfunc_decides_and_registered_version_carries_tags_and_aliases() -> None:
    settings = load_settings(overrides={"patches.size": PATCH, "patches.stride": STRIDE})
    configure_tracking(settings)
    experiment_id = ensure_experiment(settings, "unit")
    model, crafted = brightest_pixel_model(), thresholds(0.5, 0.9)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        info = log_pyfunc_model(model, crafted, settings.patches, strip())
    metrics = {"patch_recall": 0.99, "patch_precision": 0.5, "patch_specificity": 0.75}
    tags = version_tags(metrics, crafted, "abc123")
    version = register_version(info.model_uri, "steelqc-unit", tags)
    assert str(version.version) == "1" and version.run_id == run.info.run_id

    stored = mlflow.MlflowClient().get_model_version("steelqc-unit", "1").tags
    assert {k: stored[k] for k in ("recall", "precision", "specificity", "t_pass", "t_fail", "data_hash")} == {
        "recall": "0.990000",
        "precision": "0.500000",
        "specificity": "0.750000",
        "t_pass": "0.500000",
        "t_fail": "0.900000",
        "data_hash": "abc123",
    }
    assert stored["recall_bound"] == "1.000000" and stored["git_commit"]
    description = mlflow.MlflowClient().get_model_version("steelqc-unit", "1").description
    assert "recall 0.990000 · precision 0.500000 · specificity 0.750000" in description
    assert "t_pass 0.500000" in description and "**gate**: not run yet" in description

    client = mlflow.MlflowClient()
    assert alias_version(client, "steelqc-unit", "champion") is None
    assert alias_version(client, "no-such-model", "champion") is None
    client.set_registered_model_alias("steelqc-unit", "champion", "1")
    assert alias_version(client, "steelqc-unit", "champion") == "1"

    images = [strip(), strip(160), strip(250)]
    pyfunc = mlflow.pyfunc.load_model("models:/steelqc-unit@champion")
    assert pyfunc.metadata.get_input_schema().input_names() == ["image"]  # the UI shows "Inputs (1)"
    for model_input in (pd.DataFrame({"image": [encode_png(i) for i in images]}), {"image": images}):
        out = pyfunc.predict(model_input)
        assert list(out.columns) == ["decision", "worst_score", "worst_patch_y", "worst_patch_x", "patch_scores"]
        assert list(out["decision"]) == ["PASS", "HOLD", "FAIL"]
        expected = Inspector(model, crafted, PATCH, STRIDE, "reflect").inspect(images)
        assert out["worst_patch_y"].tolist() == [r.worst_patch[0] for r in expected]
        assert out["worst_patch_x"].tolist() == [r.worst_patch[1] for r in expected]
        patches = json.loads(out["patch_scores"][2])
        assert len(patches) == 27 and {"y", "x", "score", "decision"} == set(patches[0])
        assert max(p["score"] for p in patches) == pytest.approx(250 / 255, abs=1e-5)

    inspector, meta = load_inspector("models:/steelqc-unit@champion")
    assert (meta.name, meta.version, meta.run_id) == ("steelqc-unit", "1", run.info.run_id)
    assert meta.thresholds == crafted and meta.tags["data_hash"] == "abc123"
    assert meta.geometry == {"patch_size": PATCH, "stride": STRIDE, "pad_mode": "reflect", "mode": "patches"}
    assert [r.decision for r in inspector.inspect(images)] == ["PASS", "HOLD", "FAIL"]

    from steelqc.monitoring import model_version_of

    assert model_version_of("models:/steelqc-unit@champion") == ("1", run.info.run_id)
    assert model_version_of("models:/steelqc-unit/1") == ("1", run.info.run_id)
    assert model_version_of(info.model_uri) == (None, run.info.run_id)  # MLflow 3's models:/m-<id> logged model


def test_version_tags_carry_image_level_metrics_when_evaluated() -> None:
    patch_only = {"patch_recall": 0.99, "patch_precision": 0.5, "patch_specificity": 0.75}
    both = {**patch_only, "image_recall": 1.0, "image_precision": 0.8, "image_specificity": 0.6}
    image_keys = ("image_recall", "image_precision", "image_specificity")
    assert not set(image_keys) & set(version_tags(patch_only, thresholds(0.5, 0.9), "h"))
    tags = version_tags(both, thresholds(0.5, 0.9), "h")
    assert tuple(tags[key] for key in image_keys) == ("1.000000", "0.800000", "0.600000")
    assert tags["recall"] == "0.990000"


def test_results_frame_of_no_results_keeps_the_output_columns() -> None:
    from steelqc.pyfunc_io import results_frame

    assert list(results_frame([]).columns) == [
        "decision",
        "worst_score",
        "worst_patch_y",
        "worst_patch_x",
        "patch_scores",
    ]


def test_a_dict_with_one_image_is_one_image() -> None:
    image = strip(250)
    png = encode_png(image)
    for form in ({"image": png}, {"image": base64.b64encode(png).decode()}):
        decoded = images_from_model_input(form)
        assert len(decoded) == 1 and np.array_equal(decoded[0], image)


def test_versions_pickled_before_the_pyfunc_moved_still_resolve_its_class() -> None:
    import pickle

    import steelqc.pyfunc

    legacy = pickle.dumps(steelqc.pyfunc.SteelQCModel, protocol=0).replace(b"steelqc.pyfunc", b"steelqc.registry")
    assert pickle.loads(legacy) is steelqc.pyfunc.SteelQCModel
