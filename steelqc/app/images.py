"""What the Inspect page shows besides the decision: image sources, upload checks, heatmap, patch table.

Pure functions of arrays and bytes (no Streamlit), so the page stays a thin layout and these are unit-tested.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from steelqc.data.errors import DataError, ImageDecodeError, ImageSizeError
from steelqc.data.images import DEFAULT_MAX_IMAGE_PIXELS, decode_image_bytes, sniff_format

PACKAGED_DEMO_DIR = Path(__file__).resolve().parents[1] / "demo_images"
#: Real Severstal samples, present on developer and CI machines only (``../shared`` beside the project).
SHARED_SAMPLE_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "severstal-sample" / "train_images"
UPLOAD_FORMATS = ("jpeg", "png")
#: Colour of each decision on the page (Streamlit badge colours).
DECISION_COLORS = {"PASS": "green", "HOLD": "orange", "FAIL": "red"}


class UploadTooLargeError(DataError):
    """An uploaded file above ``settings.app.max_upload_mb``."""


def demo_images(packaged_dir: Path = PACKAGED_DEMO_DIR, sample_dir: Path = SHARED_SAMPLE_DIR) -> dict[str, Path]:
    """Pickable images by label: the generated strips shipped with the package, then any real samples present."""
    choices = {f"demo: {path.name}": path for path in sorted(packaged_dir.glob("*.png"))}
    if sample_dir.is_dir():
        choices.update(
            {f"severstal-sample: {path.name}": path for path in sorted(sample_dir.iterdir()) if path.is_file()}
        )
    return choices


def read_strip(
    data: bytes, *, name: str, max_mb: int, min_height: int, min_width: int, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> np.ndarray:
    """Grayscale pixels of an uploaded or picked file, checked by content, size in bytes and in pixels.

    Raises :class:`UploadTooLargeError`, :class:`ImageDecodeError` (not a JPEG/PNG whatever its extension,
    corrupt, truncated, over ``max_pixels`` by its header) or :class:`ImageSizeError` (smaller than one
    model patch), each naming the file.
    """
    if len(data) > max_mb * 1024 * 1024:
        raise UploadTooLargeError(f"file is {len(data) / 2**20:.1f} MB, the limit is {max_mb} MB", file=name)
    fmt = sniff_format(data)
    if fmt not in UPLOAD_FORMATS:
        found = f"its content is {fmt.upper()}" if fmt else "its content is not an image format we know"
        raise ImageDecodeError(f"only JPEG and PNG images can be inspected; {found}", file=name)
    pixels = decode_image_bytes(data, name=name, max_pixels=max_pixels).pixels
    height, width = pixels.shape
    if height < min_height or width < min_width:
        raise ImageSizeError(
            f"image is {height}x{width}, too small for the model's {min_height}x{min_width} patches", file=name
        )
    return pixels


def patch_heatmap(
    shape: tuple[int, int], positions: Sequence[tuple[int, int]], scores: Sequence[float] | np.ndarray, patch_size: int
) -> np.ndarray:
    """Per-pixel score ``float32 (H, W)``: the highest score of the patches covering the pixel.

    The maximum (not the mean) keeps a defect seen by one overlapping patch as hot as that patch says.
    """
    heat = np.zeros(shape, dtype=np.float32)
    for (y, x), score in zip(positions, scores, strict=True):
        window = heat[y : y + patch_size, x : x + patch_size]
        np.maximum(window, np.float32(score), out=window)
    return heat


def overlay_heatmap(
    pixels: np.ndarray, heat: np.ndarray, worst_patch: tuple[int, int], patch_size: int, alpha: float = 0.45
) -> np.ndarray:
    """RGB ``uint8`` strip with the scores blended in (0 blue → 1 red, fixed scale) and the worst patch framed."""
    colours = cv2.applyColorMap(np.clip(heat * 255.0, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    grey = cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
    blended = cv2.addWeighted(grey, 1.0 - alpha, colours, alpha, 0.0)
    y, x = worst_patch
    height, width = pixels.shape
    corner = (min(x + patch_size, width) - 1, min(y + patch_size, height) - 1)
    cv2.rectangle(blended, (x, y), corner, (255, 255, 255), 3)
    return cv2.cvtColor(blended, cv2.COLOR_BGR2RGB)


def patch_table(
    positions: Sequence[tuple[int, int]], scores: Sequence[float] | np.ndarray, decisions: Sequence[str] | np.ndarray
) -> pd.DataFrame:
    """One row per patch in grid order: where it is, its score and the decision that score alone would get."""
    return pd.DataFrame(
        {
            "patch": np.arange(len(positions)),
            "y": [int(y) for y, _ in positions],
            "x": [int(x) for _, x in positions],
            "score": np.asarray(scores, dtype=float),
            "decision": list(decisions),
        }
    )
