"""The model: one preprocessing function, input 0–255 inside, every backbone, weights options."""

from __future__ import annotations

from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.legacy.saving import legacy_h5_format

from steelqc.config import ModelSettings
from steelqc.model import (
    BACKBONE_LAYER,
    WeightsUnavailableError,
    build_backbone,
    build_model,
    embedding_model,
    preprocess_patches,
    set_backbone_trainable,
)

TINY_EFFICIENTNET = ModelSettings(backbone="efficientnetb0", weights="none", input_size=32)
TINY_CNN = ModelSettings(backbone="small_cnn", weights="none", input_size=32)
TINY_LITE0 = ModelSettings(backbone="efficientnet_lite0", weights="none", input_size=32)
BACKBONES = pytest.mark.parametrize(
    "settings", [TINY_CNN, TINY_EFFICIENTNET, TINY_LITE0], ids=["small_cnn", "efficientnetb0", "efficientnet_lite0"]
)


def test_preprocess_keeps_values_and_kind() -> None:
    patches = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4) * 7
    out = preprocess_patches(patches)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (2, 4, 4, 1)
    assert np.array_equal(out[..., 0], patches.astype(np.float32))  # 0–255: never rescaled here
    assert np.array_equal(preprocess_patches(out), out)  # idempotent on (N,S,S,1) float
    as_tensor = preprocess_patches(tf.constant(patches))
    assert isinstance(as_tensor, tf.Tensor) and as_tensor.dtype == tf.float32
    assert np.array_equal(as_tensor.numpy(), out)
    with pytest.raises(ValueError, match="got shape"):
        preprocess_patches(np.zeros((2, 4, 4, 3), np.uint8))


@BACKBONES
def test_model_shape_embedding_and_no_outside_rescaling(settings: ModelSettings) -> None:
    model = build_model(settings, patch_size=48)  # resized to 32 inside
    assert model.input_shape == (None, 48, 48, 1) and model.output_shape == (None, 1)
    assert model.get_layer("embedding").units == 64
    assert embedding_model(model).output_shape == (None, 64)
    outer_rescaling = [layer for layer in model.layers if isinstance(layer, keras.layers.Rescaling)]
    assert not outer_rescaling  # rescaling happens once, inside the backbone
    scores = model.predict(preprocess_patches(np.full((3, 48, 48), 200, np.uint8)), verbose=0)
    assert scores.shape == (3, 1) and np.all((scores >= 0) & (scores <= 1))


def test_imagenet_offline_names_the_local_file_option(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(key, "http://127.0.0.1:9")  # nothing listens there: the download fails offline-style
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(WeightsUnavailableError, match=r"model\.weights: /path/to/file\.h5"):
        build_model(ModelSettings(backbone="efficientnetb0", weights="imagenet", input_size=32), 32)


def test_small_cnn_has_no_imagenet_weights() -> None:
    with pytest.raises(WeightsUnavailableError, match="small_cnn has no ImageNet weights"):
        build_backbone(ModelSettings(backbone="small_cnn", weights="imagenet", input_size=32))


@BACKBONES
def test_local_weights_file_loads(tmp_path: Path, settings: ModelSettings) -> None:
    source = build_backbone(settings)
    path = tmp_path / "backbone.weights.h5"
    source.save_weights(path)
    model = build_model(settings.model_copy(update={"weights": str(path)}), 32)
    loaded = model.get_layer(BACKBONE_LAYER).get_weights()
    fresh = build_model(settings, 32).get_layer(BACKBONE_LAYER).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(loaded, source.get_weights(), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(loaded, fresh, strict=True))


def save_legacy_h5(backbone: keras.Model, path: Path) -> None:
    """The format Keras distributes ``efficientnetb0_notop.h5`` in (Keras 3 only writes it via this module)."""
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, backbone)


def test_legacy_h5_file_like_the_keras_download_loads(tmp_path: Path) -> None:
    source = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "efficientnetb0_notop.h5"
    save_legacy_h5(source, path)
    loaded = build_backbone(TINY_EFFICIENTNET.model_copy(update={"weights": str(path)}))
    assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), source.get_weights(), strict=True))


def test_mismatched_or_missing_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    cnn = build_backbone(TINY_CNN)
    cnn.save_weights(tmp_path / "cnn.weights.h5")
    save_legacy_h5(cnn, tmp_path / "cnn.h5")
    for name in ("cnn.weights.h5", "cnn.h5"):  # never a silently half-loaded (random) backbone
        with pytest.raises(WeightsUnavailableError, match="does not fit"):
            build_backbone(TINY_EFFICIENTNET.model_copy(update={"weights": str(tmp_path / name)}))
    with pytest.raises(WeightsUnavailableError, match="not found"):
        build_backbone(TINY_CNN.model_copy(update={"weights": str(tmp_path / "absent.weights.h5")}))
    with pytest.raises(WeightsUnavailableError, match="imagenet, none or"):
        build_backbone(TINY_CNN.model_copy(update={"weights": "resnet"}))


@pytest.mark.parametrize("settings", [TINY_EFFICIENTNET, TINY_LITE0], ids=["efficientnetb0", "efficientnet_lite0"])
def test_fine_tuning_unfreezes_only_the_top_blocks_without_batchnorm(settings: ModelSettings) -> None:
    model = build_model(settings, 32)
    backbone = model.get_layer(BACKBONE_LAYER)
    set_backbone_trainable(model, 0)
    assert not backbone.trainable_weights
    set_backbone_trainable(model, 2)
    trainable = {layer.name.split("_")[0][:6] for layer in backbone.layers if layer.trainable and layer.weights}
    assert trainable == {"block6", "block7", "top"}
    assert not any(layer.trainable for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization))
    set_backbone_trainable(model, None)
    assert len(backbone.trainable_weights) == len([w for w in backbone.weights if w.trainable])
    assert len(backbone.trainable_weights) > 140
