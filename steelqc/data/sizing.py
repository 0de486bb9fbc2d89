"""One output size for images of many sizes: resize or pad, the mask kept aligned and never emptied."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

Fit = Literal["resize", "pad"]


@dataclass(frozen=True)
class Fitted:
    """An image and its mask at the output size, and what it took to get there."""

    pixels: np.ndarray
    mask: np.ndarray
    resized: bool
    padded: bool
    mask_rescued: bool  # nearest-neighbour resizing lost every defect pixel; kept by area coverage instead


def most_common_size(sizes: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The most frequent ``(height, width)``; ties go to the larger image (less detail lost by resizing)."""
    counts = Counter(sizes)
    return max(counts, key=lambda size: (counts[size], size[0] * size[1], size))


def _resize_mask(mask: np.ndarray, height: int, width: int) -> tuple[np.ndarray, bool]:
    """Nearest-neighbour, so labels are never blurred; but a defect thinner than the scale step, which nearest
    sampling misses entirely, is kept where the area-averaged mask is non-zero: resizing never cleans an image."""
    small = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
    if small.any() or not mask.any():
        return small, False
    return cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA) > 0, True


def fit_to_size(pixels: np.ndarray, mask: np.ndarray, size: tuple[int, int], fit: Fit) -> Fitted:
    """Bring an image (area interpolation) and its boolean mask (nearest) to ``size = (height, width)``.

    ``resize`` scales to the size; ``pad`` adds zero rows and columns at the bottom and right, after
    shrinking (aspect ratio kept) an image that does not fit, since cropping could cut a defect off.
    """
    height, width = size
    scaled = size
    if fit == "pad":
        scale = min(height / pixels.shape[0], width / pixels.shape[1], 1.0)
        scaled = (
            min(height, max(1, round(pixels.shape[0] * scale))),
            min(width, max(1, round(pixels.shape[1] * scale))),
        )
    resized, rescued = scaled != pixels.shape[:2], False
    if resized:
        pixels = cv2.resize(pixels, (scaled[1], scaled[0]), interpolation=cv2.INTER_AREA)
        mask, rescued = _resize_mask(mask, *scaled)
    padded = scaled != size
    if padded:
        pad = ((0, height - scaled[0]), (0, width - scaled[1]))
        pixels, mask = np.pad(pixels, pad), np.pad(mask, pad)
    return Fitted(pixels, mask, resized, padded, rescued)
