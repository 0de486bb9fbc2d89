"""Strip mode on a tiny model: window scores from the whole image's feature map, geometry on odd sizes."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from steelqc.config import ConfigError, ModelSettings, load_settings
from steelqc.inference import Inspector
from steelqc.model import BACKBONE_LAYER, build_model, preprocess_patches
from steelqc.patches import patch_grid
from steelqc.strip import pad_strip, strip_feature_model, strip_layout
from steelqc.thresholds import Thresholds

PATCH, STRIDE = 64, 32
CELL = 16  # small_cnn: four 2x poolings, input size = patch size


@pytest.fixture(scope="module")
def model() -> keras.Model:
    keras.utils.set_random_seed(5)
    built = build_model(ModelSettings(backbone="small_cnn", weights="none", input_size=PATCH), PATCH)
    score = built.get_layer("score")
    score.set_weights([w * 30 for w in score.get_weights()])  # spread an untrained model's scores over (0, 1)
    return built


def noisy(shape: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.normal(110, 25, shape)
    image[shape[0] // 3 : shape[0] // 3 + 9, shape[1] // 2 : shape[1] // 2 + 9] += 90
    return image.clip(0, 255).astype(np.uint8)


def inspector(model: object, mode: str = "strip") -> Inspector:
    return Inspector(model, Thresholds(0.4, 0.7, 1, 1, 1, 0.5, 1, 1, True, "test"), PATCH, STRIDE, "reflect",
                     mode=mode)  # type: ignore[arg-type]  # fmt: skip


@pytest.mark.parametrize("shape", [(64, 160), (81, 150), (50, 70)])
def test_strip_scores_equal_a_direct_computation_from_the_feature_map(model: keras.Model, shape: tuple) -> None:
    image = noisy(shape, seed=shape[1])
    (result,) = inspector(model).inspect([image])

    features, cell = strip_feature_model(model)
    assert cell == CELL
    layout = strip_layout(*shape, PATCH, STRIDE, CELL)
    padded = pad_strip(image, layout.padded, "reflect")
    feature_map = np.asarray(features.predict_on_batch(preprocess_patches(padded[None])))[0]
    window = PATCH // CELL
    expected = []
    for y, x in result.positions:
        row, column = -(-y // CELL), -(-x // CELL)  # the next cell boundary at or after the patch's corner
        pooled = feature_map[row : row + window, column : column + window].mean(axis=(0, 1))[None]
        embedding = model.get_layer("embedding")(pooled)
        expected.append(float(np.asarray(model.get_layer("score")(embedding))[0, 0]))
    np.testing.assert_allclose(result.patch_scores, expected, atol=1e-5)
    assert result.positions == patch_grid(*shape, PATCH, STRIDE)
    assert result.embeddings is not None and result.embeddings.shape == (len(result.positions), 64)
    assert len(set(np.round(result.patch_scores, 4))) > 1  # the windows really differ


def test_the_rebuilt_backbone_computes_the_patch_models_feature_map(model: keras.Model) -> None:
    """Same weights, any size: on one patch-sized image the strip backbone equals the patch model's backbone."""
    image = noisy((PATCH, PATCH), seed=1)
    features, _ = strip_feature_model(model)
    x = preprocess_patches(image[None])
    patch_backbone = model.get_layer(BACKBONE_LAYER)  # fixed (PATCH, PATCH, 3) input; grey repeated as in the model
    np.testing.assert_allclose(features.predict_on_batch(x), patch_backbone.predict_on_batch(np.repeat(x, 3, axis=-1)),
                               atol=1e-5)  # fmt: skip


def test_an_image_of_one_patch_or_less_scores_as_in_patch_mode(model: keras.Model) -> None:
    images = [noisy((PATCH, PATCH), seed=2), noisy((40, 23), seed=3)]  # the small one is padded as in patch mode
    strip, patches = inspector(model).inspect(images), inspector(model, "patches").inspect(images)
    for a, b in zip(strip, patches, strict=True):
        assert a.positions == b.positions == [(0, 0)]
        np.testing.assert_allclose(a.patch_scores, b.patch_scores, atol=1e-5)


@pytest.mark.parametrize(
    ("height", "width", "patch", "stride", "cell"),
    [(50, 70, 32, 16, 16), (81, 150, 64, 32, 16), (33, 257, 32, 32, 16), (10, 12, 32, 16, 16),
     (256, 1600, 256, 128, 32), (256, 1601, 256, 128, 32), (257, 1599, 256, 128, 32), (300, 200, 256, 64, 32)],
)  # fmt: skip
def test_strip_windows_cover_every_pixel_of_odd_sized_images(
    height: int, width: int, patch: int, stride: int, cell: int
) -> None:
    layout = strip_layout(height, width, patch, stride, cell)
    assert layout.positions == patch_grid(height, width, patch, stride)  # the same grid as patch mode
    covered = np.zeros(layout.padded, bool)
    for (y, x), (row, column) in zip(layout.positions, layout.cells, strict=True):
        top, left = row * cell, column * cell
        assert y <= top < y + cell and x <= left < x + cell  # on the patch, or the next cell boundary after it
        assert top + patch <= layout.padded[0] and left + patch <= layout.padded[1]
        covered[top : top + patch, left : left + patch] = True
    assert covered[:height, :width].all()
    assert layout.padded[0] >= max(height, patch) and layout.padded[1] >= max(width, patch)
    assert layout.padded[0] - max(height, patch) < cell and layout.padded[1] - max(width, patch) < cell
    padded = pad_strip(np.zeros((height, width), np.uint8), layout.padded, "reflect")
    assert padded.shape == layout.padded


def test_strip_mode_refuses_settings_off_the_backbones_grid() -> None:
    with pytest.raises(ConfigError, match="inference.mode=strip needs patches.size .* 36.5714 px"):
        load_settings("real", {"inference.mode": "strip"})  # 224-px input for 256-px patches
    assert load_settings("demo", {"inference.mode": "strip"}).inference.mode == "strip"  # 128 for 256: 32-px cells


def test_strip_mode_takes_the_novelty_guard_but_not_a_patch_mode_bank(model: keras.Model) -> None:
    settings = load_settings("demo", {"inference.mode": "strip", "novelty.enabled": True})
    assert settings.inference.mode == "strip" and settings.novelty.enabled
    from steelqc.novelty import NoveltyBank, NoveltyGuard

    patch_bank = NoveltyBank(np.zeros((2, 4), np.float32), layer="pool")
    guard = NoveltyGuard.__new__(NoveltyGuard)
    guard.bank = patch_bank
    with pytest.raises(ValueError, match="calibrated in patches mode, not strip mode"):
        Inspector(model, Thresholds(0.4, 0.7, 1, 1, 1, 0.5, 1, 1, True, "t"), PATCH, STRIDE, "reflect",
                  mode="strip", novelty=guard)  # fmt: skip
