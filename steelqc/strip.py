"""Whole-strip scoring: the backbone runs once over the whole image and every patch window is scored from the
pooled feature map, instead of cutting overlapping patches that each go through the backbone (at stride = half
a patch, every pixel twice).

The patch model is patch → [resize] → grey to RGB → backbone → global average pooling → Dense ``embedding`` →
Dense ``score``. Strip mode runs the same backbone with the same weights over the whole image (resized by the
same factor) and, for each patch of the patch grid, average-pools the window of feature cells that patch
covers (``patch size / cell`` cells a side; ``cell`` = the backbone's stride in image pixels), then applies the
same two Dense layers. With SAME padding and windows on cell boundaries, a window's cells sit on the same
pixels as the patch model's cells; the difference is context: a strip cell at a window's border also sees
the neighbouring pixels, where the patch model saw zero padding. Positions are the patch grid's; a window
whose patch does not start on a cell boundary (the last row/column of an image whose size is not a multiple of
the cell) starts at the next boundary instead, and the image is padded (``pad_mode``) at the bottom/right so
that window exists: every pixel stays covered.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from steelqc.config import PadMode, PatchSettings
from steelqc.patches import ordered_parallel_map, patch_grid

T = TypeVar("T")

HEAD_FILE = "head.npz"


@dataclass(frozen=True)
class StripLayout:
    """Where the patch windows of one image lie: patch-grid positions, their feature cells, the padded size."""

    positions: list[tuple[int, int]]  # (y, x) of each patch, as in patch mode
    cells: list[tuple[int, int]]  # (row, column) of each window's top-left feature cell
    padded: tuple[int, int]  # (height, width) the image is padded to before the backbone


def strip_layout(height: int, width: int, patch_size: int, stride: int, cell: int) -> StripLayout:
    """The windows of a ``height × width`` image on the patch grid, each ``patch_size / cell`` cells a side."""
    if patch_size % cell or stride % cell:
        raise ValueError(f"patch size {patch_size} and stride {stride} must be multiples of the cell ({cell} px)")
    positions = patch_grid(height, width, patch_size, stride)
    cells = [(math.ceil(y / cell), math.ceil(x / cell)) for y, x in positions]
    padded = (max(r for r, _ in cells) * cell + patch_size, max(c for _, c in cells) * cell + patch_size)
    return StripLayout(positions, cells, padded)


def pad_strip(pixels: np.ndarray, padded: tuple[int, int], pad_mode: PadMode) -> np.ndarray:
    """The image padded at the bottom/right to ``padded`` (never cropped: the layout covers every pixel)."""
    pad_h, pad_w = padded[0] - pixels.shape[0], padded[1] - pixels.shape[1]
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f"cannot pad a {pixels.shape} image to {padded}")
    return np.pad(pixels, ((0, pad_h), (0, pad_w)), mode=pad_mode) if pad_h or pad_w else pixels


def pool_windows(features: np.ndarray, cells: Sequence[tuple[int, int]], window: int) -> np.ndarray:
    """Mean of each ``window × window`` block of a feature map ``(h, w, C)`` at ``cells``: ``(N, C)``."""
    return np.stack([features[r : r + window, c : c + window].mean(axis=(0, 1)) for r, c in cells])


@dataclass(frozen=True)
class PatchHead:
    """The patch model's layers after pooling, in NumPy: pooled features → ``embedding`` (ReLU) → ``score``."""

    embedding_kernel: np.ndarray
    embedding_bias: np.ndarray
    score_kernel: np.ndarray
    score_bias: np.ndarray

    @classmethod
    def of(cls, model: Any) -> PatchHead:
        """The head of a Keras patch model (dropout is the identity at inference)."""
        from steelqc.model import EMBEDDING_LAYER, SCORE_LAYER

        embedding, score = model.get_layer(EMBEDDING_LAYER), model.get_layer(SCORE_LAYER)
        return cls(*(np.asarray(w) for w in (*embedding.get_weights(), *score.get_weights())))

    def __call__(self, pooled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores ``(N,)`` float64 and embeddings ``(N, E)`` float32 of pooled features ``(N, C)``."""
        embeddings = np.maximum(pooled.astype(np.float32) @ self.embedding_kernel + self.embedding_bias, 0.0)
        logits = embeddings.astype(np.float64) @ self.score_kernel.astype(np.float64) + self.score_bias
        return 1.0 / (1.0 + np.exp(-logits.reshape(-1))), embeddings

    def save(self, path: str | Path) -> None:
        np.savez(path, **{name: getattr(self, name) for name in self.__dataclass_fields__})

    @classmethod
    def load(cls, path: str | Path) -> PatchHead:
        with np.load(path) as arrays:
            return cls(**{name: arrays[name] for name in cls.__dataclass_fields__})


FeatureMaps = Callable[[np.ndarray], np.ndarray]  # (N, H, W, 1) float32 0–255 → (N, h, w, C)


@dataclass(frozen=True)
class StripModel:
    """What strip mode scores with: a runtime giving feature maps of whole images, the head, the cell size."""

    feature_maps: FeatureMaps
    head: PatchHead
    cell: int
    runtime: str


@dataclass(frozen=True)
class ScoredStrip:
    """One image's windows in strip mode: scores and the features behind them."""

    positions: list[tuple[int, int]]
    scores: np.ndarray  # float64 (N,)
    embeddings: np.ndarray  # float32 (N, E): the head's ``embedding`` layer
    pooled: np.ndarray  # (N, C): the backbone's features pooled per window (the patch model's ``pool``)

    def features(self, layer: str) -> np.ndarray:
        return layer_features(layer, self.pooled, self.embeddings)


def layer_features(layer: str, pooled: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """The per-window features of a patch-model layer that strip mode computes: ``pool`` or ``embedding``."""
    if layer not in ("pool", "embedding"):
        raise ValueError(f"strip mode computes the pool and embedding layers, not {layer!r}")
    return pooled if layer == "pool" else embeddings


def score_strips(
    strip: StripModel,
    images: Sequence[np.ndarray],
    patch_size: int,
    stride: int,
    pad_mode: PadMode,
    *,
    strips_per_call: int = 4,
) -> list[ScoredStrip]:
    """Window scores of each image; consecutive images of the same padded size share a backbone call."""
    layouts = [strip_layout(image.shape[0], image.shape[1], patch_size, stride, strip.cell) for image in images]
    window = patch_size // strip.cell
    scored: list[ScoredStrip] = []
    for group in _same_size_runs(layouts, strips_per_call):
        batch = np.stack([pad_strip(images[i], layouts[i].padded, pad_mode) for i in group])
        maps = strip.feature_maps(batch.astype(np.float32)[..., np.newaxis])
        for i, features in zip(group, maps, strict=True):
            pooled = pool_windows(np.asarray(features), layouts[i].cells, window)
            scores, embeddings = strip.head(pooled)
            scored.append(ScoredStrip(layouts[i].positions, scores, embeddings, pooled))
    return scored


def _same_size_runs(layouts: Sequence[StripLayout], limit: int) -> Iterator[list[int]]:
    run: list[int] = []
    for i, layout in enumerate(layouts):
        if run and (len(run) >= limit or layouts[run[0]].padded != layout.padded):
            yield run
            run = []
        run.append(i)
    if run:
        yield run


@dataclass(frozen=True)
class WindowOutputs:
    """Strip-mode outputs of patch-index rows, row by row."""

    scores: np.ndarray  # float64 (N,)
    embeddings: np.ndarray  # (N, E)
    pooled: np.ndarray  # (N, C)

    def features(self, layer: str) -> np.ndarray:
        return layer_features(layer, self.pooled, self.embeddings)


def strip_rows(
    strip: StripModel,
    load_image: Callable[[str], np.ndarray],
    rows: pd.DataFrame,
    patches: PatchSettings,
    *,
    workers: int = 2,
    strips_per_call: int = 4,
) -> WindowOutputs:
    """Strip-mode scores and features of patch-index rows (``image_id, y, x``), aligned with ``rows``: each image
    is decoded (``workers`` threads) and scored once, and its windows looked up by position."""
    image_ids = [str(i) for i in dict.fromkeys(rows["image_id"])]
    found: dict[tuple[str, int, int], tuple[ScoredStrip, int]] = {}
    loaded = ordered_parallel_map(lambda image_id: (image_id, load_image(image_id)), image_ids, workers)
    for group in _chunks(loaded, strips_per_call):
        scored = score_strips(strip, [image for _, image in group], patches.size, patches.stride, patches.pad_mode,
                              strips_per_call=strips_per_call)  # fmt: skip
        for (image_id, _), result in zip(group, scored, strict=True):
            found.update({(image_id, y, x): (result, i) for i, (y, x) in enumerate(result.positions)})
    try:
        at = [found[(str(r.image_id), int(r.y), int(r.x))] for r in rows.itertuples()]
    except KeyError as exc:
        raise ValueError(f"index row {exc} is not on the {patches.size}/{patches.stride} patch grid") from None
    if not at:
        return WindowOutputs(np.empty(0, np.float64), np.empty((0, 0), np.float32), np.empty((0, 0), np.float32))
    return WindowOutputs(
        np.array([result.scores[i] for result, i in at], np.float64),
        np.stack([result.embeddings[i] for result, i in at]),
        np.stack([result.pooled[i] for result, i in at]),
    )


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def strip_feature_model(model: Any) -> tuple[Any, int]:
    """A Keras patch model's backbone rebuilt for images of any size (same weights), and its cell in pixels.

    Input ``(N, H, W, 1)`` float 0–255 as the patch model takes; output the backbone's feature map.
    """
    import keras

    from steelqc.model import BACKBONE_LAYER

    backbone = model.get_layer(BACKBONE_LAYER)
    patch_size, input_size = int(model.inputs[0].shape[1]), int(backbone.inputs[0].shape[1])
    cell = input_size // int(backbone.outputs[0].shape[1]) * patch_size // input_size
    config = backbone.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer":
            layer["config"]["batch_shape"] = (None, None, None, 3)
    flexible = backbone.__class__.from_config(config)
    flexible.set_weights(backbone.get_weights())
    inputs = keras.Input((None, None, 1), name="strip")
    x = inputs if input_size == patch_size else scale_image_layer()(input_size / patch_size, name="resize")(inputs)
    x = keras.layers.Concatenate(axis=-1, name="gray_to_rgb")([x, x, x])
    return keras.Model(inputs, flexible(x), name=f"{model.name}_strip_features"), cell


def keras_strip_model(model: Any) -> StripModel:
    """Strip mode of a Keras patch model, scoring with TensorFlow."""
    import tensorflow as tf

    features, cell = strip_feature_model(model)
    # one graph for every image size: predict_on_batch would trace again for each new (N, H, W)
    any_size = tf.function(lambda x: features(x, training=False),
                           input_signature=[tf.TensorSpec((None, None, None, 1), tf.float32)])  # fmt: skip
    return StripModel(lambda x: any_size(x).numpy(), PatchHead.of(model), cell, "keras")


@functools.cache
def scale_image_layer() -> type:
    """The Keras layer class, made on first use so that importing this module (runtimes do) needs no TensorFlow."""
    import keras
    import tensorflow as tf

    class ScaleImage(keras.layers.Layer):
        """Bilinear resize of a whole image by ``factor``: the patch model's ``Resizing`` op at any input size."""

        def __init__(self, factor: float, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.factor = factor

        def call(self, x: Any) -> Any:
            size = tf.cast(tf.round(tf.cast(tf.shape(x)[1:3], tf.float32) * self.factor), tf.int32)
            return tf.image.resize(x, size, method="bilinear")

        def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
            return (input_shape[0], None, None, input_shape[3])

    return ScaleImage


