"""Patch grid with full coverage, a label rule that keeps tiny defects, leak-free splits, and the patch index.

The grid puts a final patch flush with each edge so no pixel is ever unseen (the seed system skipped the
last 64 columns of every strip). A patch is defective when it holds at least ``min(min_defect_pixels,
component_area)`` pixels of some connected defect region: a tiny defect wholly inside always counts, a
large defect grazing a corner does not. Splits are by image, identical images stay together, and the
index records the split so later stages never re-split.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import pandas as pd

from steelqc.config import PadMode, PatchSettings
from steelqc.data.dataset import LABELS_FILE, Dataset
from steelqc.data.errors import DataError, DatasetError, MissingImageError
from steelqc.data.images import pixel_digest

SPLITS = ("train", "val", "test")
INDEX_BASE_COLUMNS = ("image_id", "y", "x", "size", "label", "classes", "split", "content_hash")
# A class-set stratum needs one group per split to be stratified on its own; smaller ones are pooled.
MIN_STRATUM_GROUPS = len(SPLITS)

T = TypeVar("T")
R = TypeVar("R")


class PatchIndexError(DataError):
    """A patch index file that is missing columns or does not match the patch settings."""


def grid_positions(length: int, size: int, stride: int) -> list[int]:
    """Start offsets along one axis: every ``stride``, then one flush with the edge; ``[0]`` if length ≤ size."""
    if size < 1 or stride < 1:
        raise ValueError(f"size and stride must be positive, got size={size}, stride={stride}")
    if stride > size:
        raise ValueError(f"stride {stride} > size {size} would leave pixels uncovered")
    if length <= size:
        return [0]
    positions = list(range(0, length - size + 1, stride))
    if positions[-1] + size < length:
        positions.append(length - size)
    return positions


def patch_grid(height: int, width: int, size: int, stride: int) -> list[tuple[int, int]]:
    """``(y, x)`` of every patch, row-major, covering every pixel of a ``height × width`` image."""
    return [(y, x) for y in grid_positions(height, size, stride) for x in grid_positions(width, size, stride)]


def pad_to_patch(pixels: np.ndarray, size: int, pad_mode: PadMode) -> np.ndarray:
    """Pad bottom/right so both sides are at least ``size``; positions stay in the original coordinates."""
    pad_h, pad_w = max(0, size - pixels.shape[0]), max(0, size - pixels.shape[1])
    if not pad_h and not pad_w:
        return pixels
    return np.pad(pixels, ((0, pad_h), (0, pad_w)), mode=pad_mode)


def slice_patches(
    pixels: np.ndarray, positions: Sequence[tuple[int, int]], size: int, pad_mode: PadMode
) -> np.ndarray:
    """The ``size × size`` patches of a 2-D image at ``positions`` as one ``(N, size, size)`` array."""
    padded = pad_to_patch(pixels, size, pad_mode)
    out = np.empty((len(positions), size, size), dtype=padded.dtype)
    for i, (y, x) in enumerate(positions):
        out[i] = padded[y : y + size, x : x + size]
    return out


def index_row_patches(dataset: Dataset, rows: pd.DataFrame, settings: PatchSettings) -> np.ndarray:
    """The uint8 patches of patch-index rows (``image_id, y, x``), image by image in first-seen order: rows
    already grouped by image come back in their own order."""
    return np.concatenate([
        slice_patches(dataset.load_image(str(image_id)), list(zip(group["y"], group["x"], strict=True)),
                      settings.size, settings.pad_mode)
        for image_id, group in rows.groupby("image_id", sort=False)
    ])  # fmt: skip


def extract_patches(
    pixels: np.ndarray, size: int, stride: int, pad_mode: PadMode
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """All patches of a 2-D ``uint8`` image on the covering grid, and their ``(y, x)`` positions."""
    positions = patch_grid(pixels.shape[0], pixels.shape[1], size, stride)
    return slice_patches(pixels, positions, size, pad_mode), positions


def patch_labels(
    masks: np.ndarray, positions: Sequence[tuple[int, int]], size: int, min_defect_pixels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Label patches by the per-component rule; also count defect pixels per class in each patch.

    ``masks`` is boolean ``(n_classes, H, W)``. Components are 8-connected regions of one class mask.
    Returns ``labels`` bool ``(N,)`` and ``px`` int64 ``(N, n_classes)``.
    """
    n = len(positions)
    labels = np.zeros(n, dtype=bool)
    px = np.zeros((n, masks.shape[0]), dtype=np.int64)
    for k, mask in enumerate(masks):
        if not mask.any():
            continue
        count, components, stats, _ = cv2.connectedComponentsWithStats(
            mask.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S
        )
        needed = np.minimum(stats[1:, cv2.CC_STAT_AREA], min_defect_pixels)
        for i, (y, x) in enumerate(positions):
            inside = np.bincount(components[y : y + size, x : x + size].ravel(), minlength=count)[1:]
            px[i, k] = int(inside.sum())
            labels[i] |= bool((inside >= needed).any())
    return labels, px


def _group_stratum_keys(group_classes: dict[str, str], group_ids: Sequence[str]) -> dict[str, str]:
    """Class-set strata, pooling rare ones: exact set, else defective/clean, else one pool."""
    keys = {g: group_classes[g] for g in group_ids}
    coarse = {g: ("defect" if group_classes[g] else "clean") for g in group_ids}
    for level in (coarse, {g: "all" for g in group_ids}):
        sizes = pd.Series(keys).value_counts()
        rare = {g for g, key in keys.items() if sizes[key] < MIN_STRATUM_GROUPS}
        if not rare:
            break
        keys = {g: (level[g] if g in rare else key) for g, key in keys.items()}
    return keys


def split_images(
    image_ids: Sequence[str],
    class_sets: Sequence[Iterable[int]],
    content_hashes: Sequence[str],
    settings: PatchSettings,
) -> dict[str, str]:
    """Assign every image to ``train``/``val``/``test``, deterministic for ``settings.seed``.

    Images with the same content hash form one group and share a split. Groups are stratified by their
    class set (rare sets are pooled, see :func:`_group_stratum_keys`); each group goes to the split whose
    image count lags its target most, within its stratum and overall. When there are at least three
    groups, val and test are never left empty.
    """
    if not (len(image_ids) == len(class_sets) == len(content_hashes)):
        raise ValueError("image_ids, class_sets and content_hashes must have the same length")
    members: dict[str, list[str]] = defaultdict(list)
    group_classes: dict[str, set[int]] = defaultdict(set)
    for image_id, classes, digest in zip(image_ids, class_sets, content_hashes, strict=True):
        members[digest].append(image_id)
        group_classes[digest].update(int(c) for c in classes)
    class_keys = {g: ",".join(map(str, sorted(c))) for g, c in group_classes.items()}
    group_ids = sorted(members)
    strata = _group_stratum_keys(class_keys, group_ids)

    val, test = settings.val_fraction, settings.test_fraction
    fractions = np.array([1.0 - val - test, val, test])
    rng = np.random.default_rng(settings.seed)
    total = np.zeros(len(SPLITS))
    assigned: dict[str, int] = {}
    for key in sorted(set(strata.values())):
        groups = [g for g in group_ids if strata[g] == key]
        groups = [groups[i] for i in rng.permutation(len(groups))]
        in_stratum = np.zeros(len(SPLITS))
        for g in groups:
            size = len(members[g])
            lag = fractions * (in_stratum.sum() + size) - in_stratum + fractions * (total.sum() + size) - total
            choice = int(np.argmax(lag))
            assigned[g] = choice
            in_stratum[choice] += size
            total[choice] += size

    _fill_empty_splits(assigned, members)
    return {image_id: SPLITS[assigned[g]] for g in group_ids for image_id in members[g]}


def _fill_empty_splits(assigned: dict[str, int], members: dict[str, list[str]]) -> None:
    """Move the smallest group of the fullest split into any empty split while groups allow it."""
    for empty in range(len(SPLITS)):
        counts = np.bincount(list(assigned.values()), minlength=len(SPLITS))
        if counts[empty] or len(assigned) < len(SPLITS):
            continue
        donor = int(np.argmax(counts))
        if counts[donor] < 2:
            continue
        candidates = sorted((len(members[g]), g) for g, s in assigned.items() if s == donor)
        assigned[candidates[0][1]] = empty


@dataclass(frozen=True)
class _ImagePatches:
    """What the index needs from one decoded image."""

    image_id: str
    content_hash: str
    positions: list[tuple[int, int]]
    labels: np.ndarray
    px: np.ndarray
    classes: tuple[int, ...]


def ordered_parallel_map(func: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``map(func, items)`` on a thread pool, in input order, with at most ``2 × workers`` calls in flight.

    Image decoding (OpenCV) releases the GIL, so threads decode in parallel; the bound keeps memory flat
    when the consumer is slower than the decoders. A consumer that stops early (or an error) cancels
    the calls not yet started instead of decoding them for nobody.
    """
    pool = ThreadPoolExecutor(max_workers=workers)
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(func, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _image_patches(dataset: Dataset, image_id: str, settings: PatchSettings) -> _ImagePatches:
    pixels = dataset.load_image(image_id)
    positions = patch_grid(pixels.shape[0], pixels.shape[1], settings.size, settings.stride)
    labels, px = patch_labels(dataset.masks(image_id), positions, settings.size, settings.min_defect_pixels)
    return _ImagePatches(image_id, pixel_digest(pixels), positions, labels, px, dataset.class_set(image_id))


def _check_labelled_images_exist(dataset: Dataset) -> None:
    present = set(dataset.image_ids)
    missing = dataset.labels[~dataset.labels["ImageId"].isin(present)]
    if len(missing):
        first = missing.iloc[0]
        raise MissingImageError(
            f"{len(missing)} label row(s) name images missing from the images folder, first {first['ImageId']!r}",
            file=f"{dataset.root}/{LABELS_FILE}",
            row=int(first["row"]),
        )


def index_images(
    dataset: Dataset, image_ids: Sequence[str], settings: PatchSettings, *, workers: int = 4
) -> pd.DataFrame:
    """Labelled patch rows of ``image_ids`` (no ``split`` column yet): the unit a flow fans out over workers."""
    per_image = list(ordered_parallel_map(lambda i: _image_patches(dataset, i, settings), image_ids, workers))
    class_ids = dataset.meta.class_ids
    rows_per_image = [len(p.positions) for p in per_image]
    positions = np.array([pos for p in per_image for pos in p.positions], dtype=np.int32).reshape(-1, 2)
    px = np.concatenate([p.px for p in per_image]) if per_image else np.zeros((0, len(class_ids)), np.int64)
    return pd.DataFrame(
        {
            "image_id": np.repeat([p.image_id for p in per_image], rows_per_image).astype(object),
            "y": positions[:, 0],
            "x": positions[:, 1],
            "size": np.full(len(positions), settings.size, dtype=np.int32),
            "label": np.concatenate([p.labels for p in per_image] or [np.zeros(0, bool)]).astype(np.int8),
            **{f"px_class_{k}": px[:, i].astype(np.int32) for i, k in enumerate(class_ids)},
            "classes": np.repeat([",".join(map(str, p.classes)) for p in per_image], rows_per_image).astype(object),
            "content_hash": np.repeat([p.content_hash for p in per_image], rows_per_image).astype(object),
        }
    )


def assign_splits(rows: pd.DataFrame, settings: PatchSettings) -> pd.DataFrame:
    """Add the by-image ``split`` column to patch rows of a whole dataset (see :func:`split_images`)."""
    images = rows.drop_duplicates("image_id")
    class_sets = [tuple(int(c) for c in classes.split(",") if c) for classes in images["classes"]]
    splits = split_images(images["image_id"].tolist(), class_sets, images["content_hash"].tolist(), settings)
    split = rows["image_id"].map(splits)
    return rows.drop(columns="content_hash").assign(split=split, content_hash=rows["content_hash"])


def build_patch_index(dataset: Dataset, settings: PatchSettings, *, workers: int = 4) -> pd.DataFrame:
    """One row per patch of every image, labelled and split; images decoded on ``workers`` threads.

    Bad images or masks raise the data layer's typed errors (run validation first to quarantine them).
    """
    if not dataset.image_ids:
        raise DatasetError("dataset has no images", file=dataset.root)
    _check_labelled_images_exist(dataset)
    return assign_splits(index_images(dataset, dataset.image_ids, settings, workers=workers), settings)


def write_index(index: pd.DataFrame, path: str | Path) -> Path:
    """Write the patch index as parquet (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    index.to_parquet(path, index=False)
    return path


def read_index(path: str | Path) -> pd.DataFrame:
    """Read a patch index, checking it has the index columns and only known split names."""
    path = Path(path)
    if not path.is_file():
        raise PatchIndexError("patch index not found", file=str(path))
    index = pd.read_parquet(path)
    missing = [c for c in INDEX_BASE_COLUMNS if c not in index.columns]
    if missing or not any(c.startswith("px_class_") for c in index.columns):
        raise PatchIndexError(f"not a patch index: missing columns {missing or ['px_class_<k>']}", file=str(path))
    unknown = sorted(set(index["split"]) - set(SPLITS))
    if unknown:
        raise PatchIndexError(f"unknown split names {unknown}", file=str(path))
    return index
