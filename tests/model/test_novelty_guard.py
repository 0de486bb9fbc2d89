"""The novelty guard in the decision path: Inspector, pyfunc output and the bank's trip through MLflow.

A transparent Keras model: the ``pool`` features are (mean, brightest pixel) / 255 and the score is the
brightest pixel / 255, so which patch is novel and which the classifier flags is known exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import keras
import mlflow
import numpy as np
import pandas as pd
import pytest

from steelqc.config import NoveltySettings, load_settings
from steelqc.data.dataset import Dataset
from steelqc.inference import Inspector
from steelqc.novelty import (
    NOVEL_PATTERN,
    NoveltyBank,
    NoveltyGuard,
    NoveltyRecorder,
    build_bank,
    calibrate,
    fit_guard,
    image_maxima,
)
from steelqc.patches import extract_patches
from steelqc.pyfunc import load_inspector, log_pyfunc_model
from steelqc.pyfunc_io import RESULT_COLUMNS
from steelqc.registry import register_version
from steelqc.thresholds import Thresholds
from steelqc.tracking import configure_tracking, ensure_experiment

from tiny_model_data import tiny_settings

PATCH, STRIDE = 32, 32


def transparent_model() -> keras.Model:
    inputs = keras.Input((PATCH, PATCH, 1))
    scaled = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    pool = keras.layers.Concatenate(name="pool")(
        [keras.layers.GlobalAveragePooling2D()(scaled), keras.layers.GlobalMaxPooling2D()(scaled)]
    )
    embedding = keras.layers.Identity(name="embedding")(pool)
    score = keras.layers.Dense(1, use_bias=False, name="score")
    model = keras.Model(inputs, score(embedding))
    score.set_weights([np.array([[0.0], [1.0]], np.float32)])
    return model


def clean_strip(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(20, 2, (64, 128)).clip(0, 255).astype(np.uint8)


def with_spot(value: int) -> np.ndarray:
    image = clean_strip(99)
    image[40, 100] = value
    return image


CRAFTED = Thresholds(0.5, 0.9, 1.0, 1.0, 1.0, 0.5, 10, 10, True, "crafted for tests")


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return transparent_model()


@pytest.fixture(scope="module")
def bank(model: keras.Model) -> NoveltyBank:
    """Bank of 40 clean strips' patches; threshold from 120 other clean strips at a 5 % budget."""
    recorder = NoveltyRecorder(model, "pool")
    train = np.concatenate([extract_patches(clean_strip(i), PATCH, STRIDE, "reflect")[0] for i in range(40)])
    recorder.predict_on_batch(train.astype(np.float32)[..., None])
    bank = build_bank(recorder.take(), NoveltySettings(bank_size=100))
    val = [extract_patches(clean_strip(1000 + i), PATCH, STRIDE, "reflect")[0] for i in range(120)]
    recorder.predict_on_batch(np.concatenate(val).astype(np.float32)[..., None])
    novelty = bank.scores(recorder.take())
    bank.calibration = calibrate(image_maxima(novelty, np.repeat(np.arange(120), 8)), 0.05, None)
    return bank


def test_a_patch_flagged_only_by_novelty_is_held_with_its_reason(model: keras.Model, bank: NoveltyBank) -> None:
    images = [clean_strip(500), with_spot(120), with_spot(250)]
    plain = Inspector(model, CRAFTED, PATCH, STRIDE, "reflect").inspect(images)
    guarded = Inspector(model, CRAFTED, PATCH, STRIDE, "reflect", novelty=NoveltyGuard(bank)).inspect(images)
    assert [r.decision for r in plain] == ["PASS", "PASS", "FAIL"]
    assert [r.decision for r in guarded] == ["PASS", "HOLD", "FAIL"]
    assert [r.reason for r in guarded] == ["", NOVEL_PATTERN, NOVEL_PATTERN]
    spotted = guarded[1]
    assert spotted.worst_score == plain[1].worst_score == pytest.approx(120 / 255, abs=1e-6)  # the classifier's
    assert spotted.novel is not None and spotted.patch_novelty is not None
    assert spotted.positions[int(np.argmax(spotted.patch_novelty))] == (32, 96) and spotted.novel.sum() == 1
    assert plain[1].patch_novelty is None and plain[1].reason == ""


def test_pyfunc_with_a_bank_round_trips_it_through_mlflow_with_the_version(
    model: keras.Model, bank: NoveltyBank
) -> None:
    settings = load_settings(overrides={"patches.size": PATCH, "patches.stride": STRIDE})
    configure_tracking(settings)
    with mlflow.start_run(experiment_id=ensure_experiment(settings, "novelty")):
        guarded_info = log_pyfunc_model(model, CRAFTED, settings.patches, clean_strip(0), novelty_bank=bank)
        plain_info = log_pyfunc_model(model, CRAFTED, settings.patches, clean_strip(0))
    register_version(guarded_info.model_uri, "steelqc-novelty", {})
    register_version(plain_info.model_uri, "steelqc-novelty", {})

    images = [clean_strip(500), with_spot(120), with_spot(250)]
    out = mlflow.pyfunc.load_model("models:/steelqc-novelty/1").predict(pd.DataFrame({"image": images}))
    assert list(out.columns) == [*RESULT_COLUMNS, "max_novelty", "reason"]
    assert out["decision"].tolist() == ["PASS", "HOLD", "FAIL"]
    assert out["reason"].tolist() == ["", NOVEL_PATTERN, NOVEL_PATTERN]
    assert out["worst_score"][1] == pytest.approx(120 / 255, abs=1e-6)
    patches = json.loads(out["patch_scores"][1])
    assert sum(p["novel"] for p in patches) == 1 and {"novelty", "novel", "score", "decision"} <= set(patches[0])

    inspector, _ = load_inspector("models:/steelqc-novelty/1")
    assert inspector.novelty is not None
    loaded = inspector.novelty.bank
    assert np.array_equal(loaded.embeddings, bank.embeddings) and loaded.calibration == bank.calibration

    # a model logged without a bank still loads and decides, with the classifier's outputs only
    plain = mlflow.pyfunc.load_model("models:/steelqc-novelty/2").predict(pd.DataFrame({"image": images}))
    assert list(plain.columns) == list(RESULT_COLUMNS)
    assert plain["decision"].tolist() == ["PASS", "PASS", "FAIL"]
    assert load_inspector("models:/steelqc-novelty/2")[0].novelty is None


def test_fit_guard_banks_clean_training_patches_and_calibrates_on_clean_validation_images(
    generated: tuple[Dataset, pd.DataFrame],
) -> None:
    from steelqc.model import build_model

    dataset, index = generated
    settings = tiny_settings(novelty__bank_size=20, novelty__max_clean_hold_rate=0.1)
    keras.utils.set_random_seed(0)
    bank = fit_guard(build_model(settings.model, settings.patches.size), dataset, index, settings.patches,
                     settings.novelty)  # fmt: skip
    clean_train = index[(index["split"] == "train") & (index["label"] == 0)]
    assert len(bank) == 20 and bank.info["n_source_patches"] == len(clean_train)
    assert bank.embeddings.shape[1] == bank.embeddings.shape[1] and bank.layer == "pool"
    val = index[index["split"] == "val"]
    clean_images = (val.groupby("image_id")["label"].max() == 0).sum()
    assert bank.calibration is not None and bank.calibration.n_clean_images == clean_images
    assert bank.calibration.hold_rate <= 0.1


def test_batch_inspection_writes_the_reason_frames_novel_patches_and_logs_novelty(
    model: keras.Model, bank: NoveltyBank, tmp_path: Path
) -> None:
    from steelqc.batch_inspection import inspect_batch
    from steelqc.data.images import encode_png
    from steelqc.monitoring import PatchLog, build_reference

    folder = tmp_path / "in"
    folder.mkdir()
    for name, image in {"clean.png": clean_strip(500), "spot.png": with_spot(120), "broken.png": None}.items():
        (folder / name).write_bytes(encode_png(image) if image is not None else b"not an image")
    reference, reducer = build_reference(model, extract_patches(clean_strip(7), PATCH, STRIDE, "reflect")[0],
                                         n_components=2, novelty=bank)  # fmt: skip
    assert {"novelty", "novel"} <= set(reference.columns)
    guarded = Inspector(model, CRAFTED, PATCH, STRIDE, "reflect", novelty=NoveltyGuard(bank))
    log = PatchLog(tmp_path / "log")
    result = inspect_batch(guarded, folder, tmp_path / "out", patch_log=log, reducer=reducer)

    rows = pd.read_csv(result.csv_path, keep_default_na=False).set_index("image")
    assert rows.loc["spot.png", "decision"] == "HOLD" and rows.loc["spot.png", "reason"] == NOVEL_PATTERN
    assert rows.loc["clean.png", "decision"] == "PASS" and rows.loc["clean.png", "reason"] == ""
    assert rows.loc["broken.png", "decision"] == "ERROR"
    assert [p.name for p in result.overlays] == ["spot.png.overlay.png"]
    overlay = cv2.imread(str(result.overlays[0]))
    assert np.all(overlay[32 + 3, 96 + 3 : 96 + 28] == (255, 0, 255))  # the novel patch, framed in magenta
    logged = log.read()
    assert len(logged) == 16 and logged["novel"].sum() == 1 and "emb_0" in logged.columns


def checkerboard(shape: tuple[int, int], square: int = 4) -> np.ndarray:
    rows, columns = np.indices(shape) // square
    return ((rows + columns) % 2 * 255).astype(np.uint8)


def test_a_strip_mode_guard_is_built_and_applied_on_strip_window_features(
    generated: tuple[Dataset, pd.DataFrame], tmp_path: Path
) -> None:
    """Strip mode gets its own bank: clean training windows' pooled features from the whole-image pass,
    calibrated on clean validation images in strip mode, applied to the windows the Inspector scores."""
    from steelqc.model import build_model
    from steelqc.novelty import novelty_runs_on_export
    from steelqc.strip import keras_strip_model, score_strips, strip_rows

    dataset, index = generated
    settings = tiny_settings(inference__mode="strip", novelty__enabled=True, novelty__bank_size=20,
                             novelty__max_clean_hold_rate=0.1)  # fmt: skip
    keras.utils.set_random_seed(0)
    model = build_model(settings.model, settings.patches.size)
    bank = fit_guard(model, dataset, index, settings.patches, settings.novelty, mode="strip")
    assert bank.mode == "strip" and len(bank) == 20 and bank.calibration is not None
    strip = keras_strip_model(model)
    clean_train = index[(index["split"] == "train") & (index["label"] == 0)]
    banked = bank.scores(strip_rows(strip, dataset.load_image, clean_train, settings.patches).features("pool"))
    assert np.sum(banked == 0.0) == 20  # the bank holds strip-mode features of clean training windows

    passes_everything = Thresholds(1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 10, 10, True, "classifier out of the way")
    clean_val = index[index["split"] == "val"].groupby("image_id")["label"].max()
    images = [dataset.load_image(str(i)) for i in clean_val[clean_val == 0].index[:2]] + [checkerboard((64, 256))]
    guard = NoveltyGuard(bank)
    results = Inspector(model, passes_everything, 32, 32, "reflect", mode="strip", novelty=guard).inspect(images)
    for result, scored in zip(results, score_strips(strip, images, 32, 32, "reflect"), strict=True):
        np.testing.assert_allclose(result.patch_novelty, bank.scores(scored.pooled))  # type: ignore[arg-type]
    assert results[-1].decision == "HOLD" and results[-1].reason == NOVEL_PATTERN
    with pytest.raises(ValueError, match="calibrated in strip mode, not patches mode"):
        Inspector(model, passes_everything, 32, 32, "reflect", novelty=guard)
    assert novelty_runs_on_export(bank.save(tmp_path / "bank.npz"))  # strip exports give the pooled features too


def test_a_strip_mode_reference_set_is_scored_in_strip_mode(generated: tuple[Dataset, pd.DataFrame]) -> None:
    """Production logs strip-mode scores for a strip-mode model; its drift reference must hold the same kind."""
    from steelqc.model import build_model
    from steelqc.monitoring import SCORE_COLUMN, log_reference
    from steelqc.monitoring.reference import reference_rows
    from steelqc.strip import keras_strip_model, strip_rows

    dataset, index = generated
    settings = tiny_settings(inference__mode="strip")
    keras.utils.set_random_seed(1)
    model = build_model(settings.model, settings.patches.size)
    configure_tracking(settings)
    with mlflow.start_run(experiment_id=ensure_experiment(settings, "strip-reference")):
        reference = log_reference(model, dataset, index, settings.patches, n_components=4, mode="strip")
    expected = strip_rows(keras_strip_model(model), dataset.load_image, reference_rows(index), settings.patches)
    np.testing.assert_allclose(reference[SCORE_COLUMN], expected.scores, atol=1e-6)
