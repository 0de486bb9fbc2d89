"""Generated Severstal-like strips, so the embedded default and the tests need no downloaded data.

Each strip is grey steel texture (grain stretched along the rolling direction, row streaks, uneven
light), sometimes with a black region where the strip ends (left or right) or an embossed diamond
pattern (not a defect, on clean and defective images alike, so it cannot stand in for "clean"). Four
defect classes look different: 1 small pits and spots, 2 short fine vertical marks, 3 scratches and long
irregular areas, 4 large dark patches.

A defect only changes pixels inside its mask and every mask pixel differs from the background by at
least :data:`MIN_VISIBLE_CHANGE` grey levels (before JPEG and any ``blur_sigma``), so labels never
point at invisible pixels. Same seed, same bytes: every random draw comes from seeded generators.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from steelqc.data.dataset import IMAGES_DIR, LABEL_COLUMNS, DatasetMeta, create_dataset_storage, write_labels_and_meta
from steelqc.data.images import encode_jpeg
from steelqc.data.rle import encode_rle

# Image-level class combinations of the 12,568 real Severstal train images, counted once from
# shared/data/severstal-image-labels/defect_types.csv (5,902 clean; masks per class 897/247/5,150/801).
SEVERSTAL_COMBINATIONS: dict[tuple[int, ...], int] = {
    (3,): 4759,
    (1,): 769,
    (4,): 516,
    (3, 4): 284,
    (2,): 195,
    (1, 3): 91,
    (1, 2): 35,
    (2, 3): 14,
    (1, 2, 3): 2,
    (2, 4): 1,
}
SEVERSTAL_DEFECT_RATE = 6666 / 12568
SEVERSTAL_CLASS_IDS = (1, 2, 3, 4)
MIN_VISIBLE_CHANGE = 4  # grey levels; smaller changes are not part of a mask
STRIP_END_RATE = 0.3  # share of images with a black region where the strip ends
DIAMOND_RATE = 0.12  # share of images with the embossed diamond pattern (not a defect)
JPEG_QUALITY = 92
_TEXTURE_SEED = 20261127  # the cached texture pieces are the same in every process


@dataclass(frozen=True)
class SynthSummary:
    """What a generation run wrote."""

    root: str
    images: int
    defective: int
    masks_per_class: dict[int, int]
    image_ids: tuple[str, ...] = field(repr=False)
    seconds: float


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_y: float, sigma_x: float) -> np.ndarray:
    noise = rng.standard_normal(shape).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), sigmaX=sigma_x, sigmaY=sigma_y, borderType=cv2.BORDER_REFLECT)
    return smooth / max(float(smooth.std()), 1e-6)


@lru_cache(maxsize=4)
def _texture_pieces(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Grain stretched along the rolling direction and a blobby field, both twice the image size.

    Computed once per image size; each strip crops them at random offsets, which keeps generation fast.
    """
    rng = np.random.default_rng(_TEXTURE_SEED)
    shape = (2 * height, 2 * width)
    grain = 0.7 * _smooth_noise(rng, shape, 5.0, 0.6) + 0.3 * _smooth_noise(rng, shape, 0.5, 0.5)
    blobs = _smooth_noise(rng, shape, 6.0, 6.0)
    return grain / grain.std(), blobs


@lru_cache(maxsize=4)
def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return y, x


def _crop(rng: np.random.Generator, piece: np.ndarray, height: int, width: int) -> np.ndarray:
    y = int(rng.integers(0, piece.shape[0] - height + 1))
    x = int(rng.integers(0, piece.shape[1] - width + 1))
    return piece[y : y + height, x : x + width]


def _low_frequency(rng: np.random.Generator, length: int, amplitude: float, waves: int = 3) -> np.ndarray:
    t = np.linspace(0.0, 1.0, length, dtype=np.float32)
    profile = np.zeros(length, np.float32)
    for _ in range(waves):
        freq, phase = rng.uniform(0.3, 2.5), rng.uniform(0, 2 * np.pi)
        profile += np.cos(2 * np.pi * freq * t + phase).astype(np.float32)
    return amplitude * profile / waves


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Grey strip: base level, uneven light in bands across the strip, streaks and grain along the rolling
    direction (vertical in Severstal's images)."""
    grain, _ = _texture_pieces(height, width)
    level = rng.uniform(70, 125)
    light = (
        _low_frequency(rng, width, rng.uniform(10, 35), waves=4)[None, :]
        + _low_frequency(rng, height, rng.uniform(2, 6))[:, None]
    )
    columns = cv2.GaussianBlur(rng.standard_normal((1, width)).astype(np.float32), (0, 0), sigmaX=1.5)
    streak_strength = _low_frequency(rng, height, 0.5, waves=2) + 1.0
    streaks = rng.uniform(4, 12) * columns * streak_strength[:, None]
    return level + light + streaks + rng.uniform(5, 11) * _crop(rng, grain, height, width)


def _diamond_pattern(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Embossed diamond lattice (rolled-in tread pattern): a highlight and a shadow along each groove."""
    period, slant, amplitude = rng.uniform(70, 120), rng.uniform(0.2, 0.35), rng.uniform(25, 45)
    y, x = _grid(height, width)
    offset = rng.uniform(0, period)
    u = np.sin(np.pi * (x + slant * y + offset) / period)
    v = np.sin(np.pi * (x - slant * y + offset) / period)
    grooves = np.exp(-((u / 0.09) ** 2)) + np.exp(-((v / 0.09) ** 2))
    return amplitude * (0.6 * np.roll(grooves, -3, axis=1) - grooves)


def _strip_end(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Boolean map of a black region where the strip ends at the left or right edge (ragged, slanted)."""
    depth = rng.uniform(0.05, 0.45) * width
    edge = (
        depth
        + rng.uniform(-0.004, 0.004) * width * np.linspace(-1, 1, height)
        + rng.normal(0, 1.0, height).cumsum() * 0.2
    )
    x = np.arange(width, dtype=np.float32)[None, :]
    black = x < edge[:, None]
    return black if rng.random() < 0.5 else black[:, ::-1]


XRange = tuple[int, int]  # columns [start, stop) where the strip is, so defects avoid the black region
Drawn = tuple[np.ndarray, np.ndarray]  # (where the defect is drawn: bool (H, W), grey-level change: float (H, W))


def _place(rng: np.random.Generator, allowed_x: XRange, size: int) -> int:
    lo, hi = allowed_x
    return int(rng.integers(lo, max(lo + 1, hi - size)))


def _draw_pits(
    rng: np.random.Generator,
    height: int,
    width: int,
    allowed_x: XRange,
    scale: float,
    contrast: float,
    blobs: np.ndarray,
) -> Drawn:
    """Class 1: clusters of small pits and spots, most under 50 px, dark or bright."""
    drawn = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        cx, cy = _place(rng, allowed_x, 60), int(rng.integers(0, height))
        for _ in range(int(rng.integers(1, 6))):
            x, y = cx + int(rng.normal(0, 12 * scale)), cy + int(rng.normal(0, 10 * scale))
            axes = (max(1, int(rng.uniform(1.5, 5) * scale)), max(1, int(rng.uniform(1.5, 4) * scale)))
            cv2.ellipse(drawn, (x, y), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    sign = -1.0 if rng.random() < 0.75 else 1.0
    return drawn.astype(bool), sign * contrast * rng.uniform(35, 60) * (1 + 0.15 * blobs)


def _draw_vertical_marks(
    rng: np.random.Generator,
    height: int,
    width: int,
    allowed_x: XRange,
    scale: float,
    contrast: float,
    blobs: np.ndarray,
) -> Drawn:
    """Class 2: a few short, fine vertical marks side by side."""
    drawn = np.zeros((height, width), np.uint8)
    x0, y0 = _place(rng, allowed_x, 80), int(rng.integers(0, max(1, height - 20)))
    for _ in range(int(rng.integers(2, 7))):
        x = x0 + int(rng.integers(0, 60))
        y = y0 + int(rng.integers(-10, 10))
        length = int(rng.uniform(12, 45) * scale)
        cv2.line(
            drawn,
            (x, y),
            (x + int(rng.integers(-2, 3)), y + length),
            1,
            max(1, int(round(rng.uniform(1, 2.5) * scale))),
        )
    sign = 1.0 if rng.random() < 0.6 else -1.0
    return drawn.astype(bool), sign * contrast * rng.uniform(40, 65) * (1 + 0.1 * blobs)


def _draw_scratches(
    rng: np.random.Generator,
    height: int,
    width: int,
    allowed_x: XRange,
    scale: float,
    contrast: float,
    blobs: np.ndarray,
) -> Drawn:
    """Class 3: long thin scratches, or a long irregular area of lighter, streaky metal."""
    drawn = np.zeros((height, width), np.uint8)
    if rng.random() < 0.55:
        for _ in range(int(rng.integers(1, 4))):
            length = rng.uniform(80, 500) * scale
            angle = np.deg2rad(rng.uniform(-60, 60) + (90 if rng.random() < 0.3 else 0))
            x0, y0 = _place(rng, allowed_x, 40), int(rng.integers(0, height))
            points = [(x0, y0)]
            for _ in range(4):
                angle += rng.normal(0, 0.08)
                x, y = points[-1]
                points.append((int(x + np.cos(angle) * length / 4), int(y + np.sin(angle) * length / 4)))
            thickness = max(1, int(round(rng.uniform(2, 5) * scale)))
            cv2.polylines(drawn, [np.array(points, np.int32)], False, 1, thickness)
        return drawn.astype(bool), contrast * rng.uniform(35, 60) * (1 + 0.15 * blobs)
    length, thick = rng.uniform(150, 600) * scale, rng.uniform(15, 60) * scale
    cx, cy = _place(rng, allowed_x, int(length // 2)) + int(length // 4), int(rng.integers(0, height))
    angle = rng.uniform(-20, 20) + (90 if rng.random() < 0.5 else 0)
    cv2.ellipse(drawn, (cx, cy), (int(length / 2), int(thick / 2)), float(angle), 0, 360, 1, -1)
    irregular = drawn.astype(bool) & (blobs > -0.6)
    sign = 1.0 if rng.random() < 0.7 else -1.0
    return irregular, sign * contrast * rng.uniform(25, 45) * (1 + 0.3 * np.abs(blobs))


def _draw_patches(
    rng: np.random.Generator,
    height: int,
    width: int,
    allowed_x: XRange,
    scale: float,
    contrast: float,
    blobs: np.ndarray,
) -> Drawn:
    """Class 4: large dark patches with ragged edges, often touching the top or bottom of the strip."""
    y, x = _grid(height, width)
    drawn = np.zeros((height, width), bool)
    for _ in range(int(rng.integers(1, 3))):
        ax, ay = rng.uniform(40, 160) * scale, rng.uniform(30, 110) * scale
        cx, cy = _place(rng, allowed_x, int(2 * ax)) + ax, rng.uniform(0, height)
        drawn |= ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 + 0.35 * blobs < 1.0
    return drawn, -contrast * rng.uniform(45, 75) * (1 + 0.2 * blobs)


_DRAWERS = {1: _draw_pits, 2: _draw_vertical_marks, 3: _draw_scratches, 4: _draw_patches}


def generate_strip(
    rng: np.random.Generator,
    *,
    defective_classes: Sequence[int] = (),
    contrast: float = 1.0,
    size_scale: float = 1.0,
    height: int = 256,
    width: int = 1600,
    brightness: float = 0.0,
    blur_sigma: float = 0.0,
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """One strip: ``uint8 (H, W)`` pixels and a non-empty boolean mask per requested defect class.

    ``brightness`` (grey levels added to the whole image) and ``blur_sigma`` (Gaussian, 0 = none) produce
    controlled shifts for monitoring; masks still mark where the defects are. The background draws from
    its own child generator, so the same seed with and without defects gives the same background.
    """
    if contrast <= 0 or size_scale <= 0:
        raise ValueError("contrast and size_scale must be positive")
    unknown = set(defective_classes) - set(_DRAWERS)
    if unknown:
        raise ValueError(f"unknown defect classes {sorted(unknown)} (known: {sorted(_DRAWERS)})")
    background_rng, defect_rng = rng.spawn(2)
    background = _background(background_rng, height, width) + brightness
    if background_rng.random() < DIAMOND_RATE:
        background += _diamond_pattern(background_rng, height, width)
    black = _strip_end(background_rng, height, width) if background_rng.random() < STRIP_END_RATE else None
    if black is not None:
        grain = _crop(background_rng, _texture_pieces(height, width)[0], height, width)
        background[black] = background_rng.uniform(0, 4) + 1.5 * grain[black]
    base = np.clip(np.rint(background), 0, 255)
    strip_cols = np.flatnonzero(~black.all(axis=0)) if black is not None else np.arange(width)
    allowed_x = (int(strip_cols[0]), int(strip_cols[-1]) + 1)
    blobs_piece = _texture_pieces(height, width)[1]

    image = base.copy()
    free = np.ones((height, width), bool) if black is None else ~black  # defects never overlap
    masks: dict[int, np.ndarray] = {}
    for class_id in sorted(set(defective_classes)):
        for _attempt in range(20):
            blobs = _crop(defect_rng, blobs_piece, height, width)
            drawn, delta = _DRAWERS[class_id](defect_rng, height, width, allowed_x, size_scale, contrast, blobs)
            changed = np.clip(np.rint(base + delta), 0, 255)
            mask = drawn & free & (np.abs(changed - base) >= MIN_VISIBLE_CHANGE)
            if mask.any():
                break
        else:
            raise ValueError(
                f"no visible class {class_id} defect fits after 20 tries: "
                f"contrast {contrast} too low or image too small"
            )
        image[mask] = changed[mask]
        free &= ~mask
        masks[class_id] = mask
    if blur_sigma > 0:
        image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigmaX=blur_sigma)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), masks


def _class_plan(rng: np.random.Generator, images: int, defect_rate: float) -> list[tuple[int, ...]]:
    """Per-image defect classes in the real proportions, every class present once there is room for it.

    Quotas (largest remainder) instead of independent draws keep small sets faithful: 24 images still
    get the rare class 2, which validation requires.
    """
    n_defective = int(round(defect_rate * images))
    total = sum(SEVERSTAL_COMBINATIONS.values())
    combos = list(SEVERSTAL_COMBINATIONS)
    exact = np.array([SEVERSTAL_COMBINATIONS[c] * n_defective / total for c in combos])
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: n_defective - counts.sum()]:
        counts[i] += 1
    plan = [combo for combo, n in zip(combos, counts, strict=True) for _ in range(n)]
    if n_defective >= len(SEVERSTAL_CLASS_IDS):
        for class_id in SEVERSTAL_CLASS_IDS:
            if not any(class_id in combo for combo in plan):
                plan[plan.index(max(plan, key=plan.count))] = (class_id,)
    plan += [()] * (images - n_defective)
    return [plan[i] for i in rng.permutation(images)]


def generate_dataset(
    out: str | Path,
    images: int,
    seed: int,
    *,
    defect_rate: float = SEVERSTAL_DEFECT_RATE,
    contrast: float = 1.0,
    size_scale: float = 1.0,
    height: int = 256,
    width: int = 1600,
    progress: Callable[[int, int], None] | None = None,
) -> SynthSummary:
    """Write a Severstal-layout dataset of ``images`` generated strips to ``out`` (folder or ``s3://``).

    Refuses a target that already holds a dataset, since stale images would silently count as clean.
    ``progress(done, total)`` is called after each image.
    """
    if images < 1:
        raise ValueError("images must be at least 1")
    if not 0.0 <= defect_rate <= 1.0:
        raise ValueError("defect_rate must be between 0 and 1")
    started = time.perf_counter()
    storage = create_dataset_storage(out)
    master = np.random.default_rng(seed)
    plan = _class_plan(master, images, defect_rate)
    image_ids: list[str] = []
    seen: set[str] = set()
    while len(image_ids) < images:
        image_id = f"{int(master.integers(0, 16**9)):09x}.jpg"
        if image_id not in seen:
            seen.add(image_id)
            image_ids.append(image_id)
    rows: list[tuple[str, str, str]] = []
    for i, (image_id, classes) in enumerate(zip(image_ids, plan, strict=True)):
        pixels, masks = generate_strip(
            np.random.default_rng([seed, i]),
            defective_classes=classes,
            contrast=contrast,
            size_scale=size_scale,
            height=height,
            width=width,
        )
        storage.write_bytes(f"{IMAGES_DIR}/{image_id}", encode_jpeg(pixels, JPEG_QUALITY))
        rows.extend((image_id, str(class_id), encode_rle(mask)) for class_id, mask in sorted(masks.items()))
        if progress is not None:
            progress(i + 1, images)
    labels = pd.DataFrame(rows, columns=LABEL_COLUMNS)
    write_labels_and_meta(storage, labels, DatasetMeta(name="synthetic-severstal", height=height, width=width))
    return SynthSummary(
        root=storage.uri,
        images=images,
        defective=sum(1 for c in plan if c),
        masks_per_class={c: sum(1 for combo in plan if c in combo) for c in SEVERSTAL_CLASS_IDS},
        image_ids=tuple(image_ids),
        seconds=time.perf_counter() - started,
    )
