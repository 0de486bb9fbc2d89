"""What the Inspect page shows besides the decision: image sources, upload checks, heatmap, patch table.

Pure functions of arrays and bytes (no Streamlit), so the page stays a thin layout and these are unit-tested.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from steelqc.data.errors import DataError, ImageDecodeError, ImageSizeError
from steelqc.data.images import DEFAULT_MAX_IMAGE_PIXELS, decode_image_bytes, sniff_format
from steelqc.thresholds import Thresholds

PACKAGED_DEMO_DIR = Path(__file__).resolve().parents[1] / "demo_images"
#: Real Severstal samples, present on developer and CI machines only (``../shared`` beside the project).
SHARED_SAMPLE_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "severstal-sample" / "train_images"
UPLOAD_FORMATS = ("jpeg", "png")
#: Colour of each decision on the page and in its figures (ERROR: a file that could not be inspected).
DECISION_COLORS = {"PASS": "#1b7f3b", "HOLD": "#d97706", "FAIL": "#c62828", "ERROR": "#6b7280"}
#: Heat scale: transparent at 0, so the strip stays as it is where the model sees nothing.
HEAT_CMAP = "turbo"


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


def _rendered(figure: Figure) -> np.ndarray:
    """RGB ``uint8`` pixels of a Matplotlib figure (Agg, no pyplot state: Streamlit serves sessions on threads)."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _threshold_lines(thresholds: Thresholds) -> list[tuple[float, str]]:
    """(value, label) of the thresholds that can be reached; one line when the HOLD band is empty."""
    if thresholds.t_fail <= thresholds.t_pass:
        return [(thresholds.t_pass, "t_pass = t_fail")]
    lines = [(thresholds.t_pass, "t_pass")]
    if thresholds.t_fail <= 1.0:
        lines.append((thresholds.t_fail, "t_fail"))
    return lines


def heatmap_figure(
    pixels: np.ndarray, heat: np.ndarray, worst_patch: tuple[int, int], patch_size: int,
    thresholds: Thresholds, decision: str,
) -> np.ndarray:  # fmt: skip
    """The strip in its own grey with the scores over it and a colour bar marked at the thresholds.

    Opacity grows with the square of the score (0 is fully transparent), so clean steel is shown as it is and
    what the model flags stands out; the worst patch is framed in the decision's colour.
    """
    height, width = pixels.shape
    strip_height = float(np.clip(12.0 * 0.9 * height / width, 1.6, 7.0))  # inches; a strip 12 wide, a tile 7 high
    fig_width = min(12.0, strip_height * width / height / 0.9 + 1.0)
    figure = Figure(figsize=(fig_width, strip_height + 0.5), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    axes.imshow(pixels, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    colours = matplotlib.colormaps[HEAT_CMAP](np.clip(heat, 0.0, 1.0))
    colours[..., 3] = 0.55 * np.clip(heat, 0.0, 1.0) ** 2  # squared: low scores barely tint; at most 55 %: steel shows
    axes.imshow(colours, interpolation="nearest")
    y, x = worst_patch
    axes.add_patch(
        Rectangle((x - 0.5, y - 0.5), min(patch_size, width - x), min(patch_size, height - y),
                  fill=False, edgecolor=DECISION_COLORS.get(decision, "white"), linewidth=3)
    )  # fmt: skip
    axes.set_xticks([])
    axes.set_yticks([])
    bar = figure.colorbar(ScalarMappable(Normalize(0.0, 1.0), HEAT_CMAP), ax=axes, fraction=0.025, pad=0.01)
    bar.ax.set_title("score", fontsize=9)
    lines = _threshold_lines(thresholds)
    for value, _label in lines:
        bar.ax.axhline(value, color="black", linewidth=2)
    bar.set_ticks([0.0, *(value for value, _ in lines), 1.0],
                  labels=["0", *(f"{label} {value:.2f}" for value, label in lines), "1"], fontsize=8)  # fmt: skip
    return _rendered(figure)


def patch_bars_figure(scores: Sequence[float] | np.ndarray, decisions: Sequence[str] | np.ndarray,
                      thresholds: Thresholds) -> np.ndarray:  # fmt: skip
    """One bar per patch (grid order) in the colour of the decision its score gets, thresholds as dashed lines."""
    scores = np.asarray(scores, dtype=float)
    figure = Figure(figsize=(12.0, 2.4), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    index = np.arange(len(scores))
    axes.bar(index, scores, color=[DECISION_COLORS[d] for d in decisions], width=0.8)
    for value, label in _threshold_lines(thresholds):
        axes.axhline(value, color="black", linestyle="--", linewidth=1)
        axes.text(len(scores) - 0.5, value, f" {label} {value:.2f}", va="bottom", ha="right", fontsize=8)
    axes.set_ylim(0.0, 1.0)
    axes.set_xlim(-0.6, max(len(scores), 1) - 0.4)
    axes.set_xlabel("patch (grid order, as in the table)")
    axes.set_ylabel("score")
    axes.set_xticks(index if len(scores) <= 40 else index[:: max(1, len(scores) // 20)])
    present = [d for d in ("PASS", "HOLD", "FAIL") if d in set(decisions)]
    axes.legend(handles=[Patch(color=DECISION_COLORS[d], label=d) for d in present], loc="upper left",
                bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)  # fmt: skip
    return _rendered(figure)


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
