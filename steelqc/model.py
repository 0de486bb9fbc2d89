"""The patch classifier: one preprocessing function, three backbones, a small head ending in one sigmoid.

Everything that changes pixel values (resizing, channel repeat, rescaling) is a layer *inside* the model, and
the only thing done outside is :func:`preprocess_patches` (shape and dtype, values stay 0–255). Training,
evaluation and inference all call it, so no caller can normalise twice — the seed system's bug.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import keras
import numpy as np
import tensorflow as tf

from steelqc.config import ModelSettings
from steelqc.lite0 import WeightsUnavailableError, efficientnet_lite0, load_imagenet_weights

__all__ = ["WeightsUnavailableError", "build_backbone", "build_model", "embedding_model", "preprocess_patches"]

BACKBONE_LAYER = "backbone"
EMBEDDING_LAYER = "embedding"
SCORE_LAYER = "score"
EMBEDDING_UNITS = 64
SMALL_CNN_FILTERS = (32, 64, 96, 128)

PatchArray = TypeVar("PatchArray", np.ndarray, tf.Tensor)


def preprocess_patches(patches: PatchArray) -> PatchArray:
    """Patches ``(N,S,S)`` or ``(N,S,S,1)``, uint8 or float → float32 ``(N,S,S,1)`` in 0–255.

    Values are deliberately *not* rescaled: the model rescales internally (EfficientNet expects 0–255).
    NumPy in gives NumPy out; a TensorFlow tensor in (e.g. inside ``tf.data.Dataset.map``) gives a tensor out.
    """
    if isinstance(patches, tf.Tensor):
        rank = patches.shape.rank
        if rank not in (3, 4) or (rank == 4 and patches.shape[-1] != 1):
            raise ValueError(f"patches must be (N,S,S) or (N,S,S,1), got shape {patches.shape}")
        out = tf.cast(patches, tf.float32)
        return out[..., tf.newaxis] if rank == 3 else out
    array = np.asarray(patches)
    if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[-1] != 1):
        raise ValueError(f"patches must be (N,S,S) or (N,S,S,1), got shape {array.shape}")
    out = array.astype(np.float32, copy=False)
    return out[..., np.newaxis] if out.ndim == 3 else out


def _efficientnet_backbone(*, imagenet: bool, input_size: int) -> keras.Model:
    shape = (input_size, input_size, 3)
    if imagenet:
        try:
            return keras.applications.EfficientNetB0(
                include_top=False, weights="imagenet", input_shape=shape, name=BACKBONE_LAYER
            )
        except Exception as exc:  # Keras raises a bare Exception("URL fetch failure ...") offline
            raise WeightsUnavailableError(
                "could not download the ImageNet weights of EfficientNetB0 "
                f"({exc}). Offline, download efficientnetb0_notop.h5 elsewhere and set "
                "`model.weights: /path/to/file.h5` (or `model.weights: none` for random weights)"
            ) from exc
    return keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=shape, name=BACKBONE_LAYER)


def _lite0_backbone(*, imagenet: bool, input_size: int) -> keras.Model:
    backbone = efficientnet_lite0((input_size, input_size, 3), name=BACKBONE_LAYER)
    if imagenet:
        load_imagenet_weights(backbone)
    return backbone


def _small_cnn_backbone(input_size: int) -> keras.Model:
    """Four conv blocks, rescaling to 0–1 inside so it takes the same 0–255 input as EfficientNet.

    No BatchNormalization: trained from scratch on small demo data, its moving statistics lag far behind the
    batch statistics for hundreds of steps and validation scores collapse while training loss looks perfect.
    """
    inputs = keras.Input((input_size, input_size, 3))
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescaling")(inputs)
    for number, filters in enumerate(SMALL_CNN_FILTERS, start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"block{number}_conv")(x)
        x = keras.layers.MaxPooling2D(name=f"block{number}_pool")(x)
    return keras.Model(inputs, x, name=BACKBONE_LAYER)


def _load_weights_file(backbone: keras.Model, path: Path) -> None:
    """Strict, by topology, for both formats: a file that does not fit raises instead of loading nothing.

    (``by_name`` on a legacy ``.h5`` silently skips every layer whose name is absent — a random backbone
    that looks pretrained.) Keras' own ``efficientnetb0_notop.h5`` fits the EfficientNetB0 backbone.
    """
    if not path.is_file():
        raise WeightsUnavailableError(f"model.weights file not found: {path}")
    try:
        backbone.load_weights(path)
    except (ValueError, KeyError, OSError) as exc:
        raise WeightsUnavailableError(f"model.weights file {path} does not fit the {backbone.name}: {exc}") from exc


def build_backbone(settings: ModelSettings) -> keras.Model:
    """The backbone alone, with the configured weights (``imagenet`` | ``none`` | a ``.h5``/``.weights.h5`` path)."""
    weights = settings.weights.strip()
    kind = weights.lower() if weights.lower() in {"imagenet", "none"} else "file"
    if kind == "file" and not weights.endswith(".h5"):
        raise WeightsUnavailableError(
            f"model.weights must be imagenet, none or a .h5/.weights.h5 path, got {weights!r}"
        )
    if settings.backbone == "small_cnn" and kind == "imagenet":
        raise WeightsUnavailableError(
            "small_cnn has no ImageNet weights; use `model.weights: none` or `model.weights: /path/to/file.weights.h5`"
        )
    if settings.backbone == "efficientnetb0":
        backbone = _efficientnet_backbone(imagenet=kind == "imagenet", input_size=settings.input_size)
    elif settings.backbone == "efficientnet_lite0":
        backbone = _lite0_backbone(imagenet=kind == "imagenet", input_size=settings.input_size)
    else:
        backbone = _small_cnn_backbone(settings.input_size)
    if kind == "file":
        _load_weights_file(backbone, Path(weights).expanduser())
    return backbone


def build_model(settings: ModelSettings, patch_size: int) -> keras.Model:
    """Patch ``(S,S,1)`` float 0–255 → sigmoid defect score; the penultimate Dense layer is ``embedding``."""
    inputs = keras.Input((patch_size, patch_size, 1), name="patch")
    x = inputs
    if patch_size != settings.input_size:
        x = keras.layers.Resizing(settings.input_size, settings.input_size, name="resize")(x)
    x = keras.layers.Concatenate(axis=-1, name="gray_to_rgb")([x, x, x])
    x = build_backbone(settings)(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(settings.dropout, name="dropout")(x)
    x = keras.layers.Dense(EMBEDDING_UNITS, activation="relu", name=EMBEDDING_LAYER)(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name=SCORE_LAYER)(x)
    return keras.Model(inputs, outputs, name=f"steelqc_{settings.backbone}")


def embedding_model(model: keras.Model) -> keras.Model:
    """Same input, output = the ``embedding`` layer (features for drift monitoring)."""
    return keras.Model(model.inputs, model.get_layer(EMBEDDING_LAYER).output, name=f"{model.name}_embedding")


def _block_name(layer_name: str) -> str | None:
    """``block6a_expand_conv`` → ``block6``; ``top_conv`` → ``top``; stem/rescaling → None (never fine-tuned)."""
    head = layer_name.split("_", 1)[0]
    if head == "top":
        return "top"
    if head.startswith("block") and len(head) > 5 and head[5].isdigit():
        return head[:6]
    return None


def set_backbone_trainable(model: keras.Model, n_top_blocks: int | None) -> None:
    """Freeze the backbone except its top ``n_top_blocks`` blocks (``None``: the whole backbone trains).

    EfficientNet's (B0 and Lite0) ``top`` conv counts with the last block; BatchNormalization layers stay frozen when
    fine-tuning a part, so small batches cannot wreck the pretrained statistics. Recompile afterwards.
    """
    backbone = model.get_layer(BACKBONE_LAYER)
    if n_top_blocks is None:
        backbone.trainable = True
        for layer in backbone.layers:  # a Functional model does not reliably propagate the flag down
            layer.trainable = True
        return
    if n_top_blocks < 0:
        raise ValueError(f"n_top_blocks must be ≥ 0, got {n_top_blocks}")
    blocks = sorted({b for layer in backbone.layers if (b := _block_name(layer.name)) and b != "top"})
    unfrozen = set(blocks[len(blocks) - n_top_blocks :]) if n_top_blocks else set()
    if unfrozen:
        unfrozen.add("top")
    backbone.trainable = bool(unfrozen)
    for layer in backbone.layers:
        layer.trainable = _block_name(layer.name) in unfrozen and not isinstance(
            layer, keras.layers.BatchNormalization
        )
