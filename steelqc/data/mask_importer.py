"""Import image-and-mask data (a mask image per picture, defective where its pixels are non-zero) into the
Severstal layout, brought to one size, with the class taken from the folder.

What a mask means (the mask is the ground truth):
- in a clean folder (``MT_Free``, ``good``…) images are clean and need no mask; a mask there must be empty,
  since defect pixels in a clean folder contradict the folder (:class:`MaskError`, nothing guessed);
- in a defect folder an empty mask means a clean image by default (``empty_mask="clean"``): an image with
  no defect pixels cannot teach the defect. Magnetic tile has three such images in ``MT_Uneven``;
- a defect-folder image without a mask is an error by default (``missing_mask="error"``).
Every written image has a row in ``import_mapping.csv`` (ImageId, source image and mask, class, note), so
renamed images and the rules above can be traced back to the source files.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from steelqc.data.dataset import IMAGES_DIR, LABEL_COLUMNS, DatasetMeta, check_image_id, write_labels_and_meta
from steelqc.data.errors import DatasetError, ImageDecodeError, ImageSizeError, MaskError
from steelqc.data.images import decode_image_bytes, decode_mask_bytes, encode_jpeg, read_image_size
from steelqc.data.import_common import IMAGE_ID_PATTERN, ImportSummary, staged_dataset
from steelqc.data.mask_pairing import (
    DEFAULT_CLEAN_FOLDERS,
    DEFAULT_MASK_PATTERNS,
    PairedImage,
    assign_image_ids,
    check_source,
    class_names,
    is_clean_folder,
    pair_images,
)
from steelqc.data.rle import encode_rle
from steelqc.data.sizing import Fit, fit_to_size, most_common_size
from steelqc.data.storage import Storage

MAPPING_FILE = "import_mapping.csv"
MAPPING_COLUMNS = ["ImageId", "image", "mask", "class", "note"]
SINGLE_CLASS = "defect"
ClassFrom = Literal["folder", "single"]
Policy = Literal["clean", "error"]


@dataclass(frozen=True)
class MaskImportSummary(ImportSummary):
    """What an image-and-mask import wrote; each defective image has one class, so ``masks_per_class`` is
    also its number of defective images."""

    clean: int
    height: int
    width: int
    fit: str
    resized: int
    padded: int
    empty_masks_clean: int  # defect-folder images whose mask was empty, written clean
    missing_masks_clean: int  # defect-folder images without a mask, written clean (missing_mask="clean")
    masks_kept_by_area: int  # masks nearest-neighbour resizing would have emptied (see sizing.fit_to_size)
    renamed: int
    mapping_file: str


@dataclass(frozen=True)
class _Item:
    pair: PairedImage
    image_id: str
    class_id: int | None  # None: in a clean folder
    height: int
    width: int


def _classes(
    src: Path, pairs: Sequence[PairedImage], class_from: ClassFrom, clean_folders: Sequence[str]
) -> tuple[dict[int, str], list[int | None]]:
    """Class ids 1..K in sorted name order, and each image's class (None: in a clean folder)."""
    names = class_names(pair.folder for pair in pairs if pair.folder is not None)
    clean = {folder for folder, name in names.items() if is_clean_folder(folder, name, clean_folders)}
    loose = [pair for pair in pairs if pair.folder is None]
    defect_names = sorted({names[folder] for folder in names if folder not in clean})
    if class_from == "single" or (loose and not defect_names):  # a flat images/ + masks/ tree (+ a clean folder)
        return {1: SINGLE_CLASS}, [None if pair.folder in clean else 1 for pair in pairs]
    if loose:
        raise DatasetError(
            "image is not inside a class folder, unlike the others (move it, or import with one class)",
            file=str(src / loose[0].image),
        )
    if not defect_names:
        raise DatasetError(f"every image is in a clean folder ({', '.join(sorted(clean))}): no class", file=str(src))
    ids = {name: i for i, name in enumerate(defect_names, start=1)}
    image_classes = [None if pair.folder in clean else ids[names[str(pair.folder)]] for pair in pairs]
    return {i: name for name, i in ids.items()}, image_classes


def _plan(
    src: Path,
    pairs: Sequence[PairedImage],
    class_ids: Sequence[int | None],
    missing_mask: Policy,
    n_patterns: int,
    progress: Callable[[int], None],
) -> list[_Item]:
    """Checks that need only file headers, before any pixel is decoded: sizes, mask sizes, missing masks."""
    items: list[_Item] = []
    image_ids = assign_image_ids([pair.image for pair in pairs])
    for done, (pair, image_id, class_id) in enumerate(zip(pairs, image_ids, class_ids, strict=True), start=1):
        check_image_id(image_id, file=str(src / pair.image))
        height, width = read_image_size(src / pair.image)
        if pair.mask is not None:
            mask_height, mask_width = read_image_size(src / pair.mask)
            if (mask_height, mask_width) != (height, width):
                raise ImageSizeError(
                    f"mask is {mask_height}x{mask_width} but its image {pair.image.as_posix()} is {height}x{width}",
                    file=str(src / pair.mask),
                )
        elif class_id is not None and missing_mask == "error":
            raise MaskError(
                f"no mask for this image in defect folder {pair.folder!r} ({n_patterns} mask patterns tried)",
                file=str(src / pair.image),
            )
        items.append(_Item(pair, image_id, class_id, height, width))
        progress(done)
    return items


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"cannot read: {exc.strerror or exc}", file=str(path)) from None


def _load(src: Path, item: _Item) -> tuple[bytes, np.ndarray, bool, np.ndarray]:
    """Source bytes, grey pixels, whether the bytes are already a grey JPEG, and the mask (all False if none)."""
    path = src / item.pair.image
    data = _read(path)
    decoded = decode_image_bytes(data, name=str(path))
    if decoded.pixels.shape != (item.height, item.width):
        raise ImageSizeError(
            f"decodes as {decoded.pixels.shape} but its header says {item.height}x{item.width}", file=str(path)
        )
    mask = np.zeros(decoded.pixels.shape, dtype=bool)
    if item.pair.mask is not None:
        mask_path = src / item.pair.mask
        mask = decode_mask_bytes(_read(mask_path), name=str(mask_path))
        if mask.shape != decoded.pixels.shape:
            raise ImageSizeError(
                f"mask decodes as {mask.shape}, its image as {decoded.pixels.shape}", file=str(mask_path)
            )
        if item.class_id is None and mask.any():
            raise MaskError(
                f"{int(mask.sum())} defect pixels in a mask in clean folder {item.pair.folder!r}", file=str(mask_path)
            )
    return data, decoded.pixels, decoded.format == "jpeg" and decoded.channels == 1, mask


def _write(
    src: Path,
    storage: Storage,
    items: Sequence[_Item],
    classes: dict[int, str],
    size: tuple[int, int],
    fit: Fit,
    empty_mask: Policy,
    progress: Callable[[int], None],
) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str, str, str]], Counter[str]]:
    """Decode, fit and write every image; its label rows, mapping rows, and counts of what was done."""
    rows: list[tuple[str, str, str]] = []
    mapping: list[tuple[str, str, str, str, str]] = []
    counts: Counter[str] = Counter()
    for done, item in enumerate(items, start=len(items) + 1):
        data, pixels, grey_jpeg, mask = _load(src, item)
        renamed = item.image_id != f"{item.pair.image.stem}.jpg"
        notes = ["renamed to a safe, unique ImageId"] if renamed else []
        counts["renamed"] += renamed
        class_id = item.class_id
        if class_id is not None and not mask.any():
            if item.pair.mask is not None and empty_mask == "error":
                raise MaskError(f"empty mask in defect folder {item.pair.folder!r}", file=str(src / item.pair.mask))
            kind = "empty_masks_clean" if item.pair.mask is not None else "missing_masks_clean"
            notes.append("empty mask in a defect folder: written clean" if item.pair.mask else "no mask: written clean")
            counts[kind] += 1
            class_id = None
        fitted = fit_to_size(pixels, mask, size, fit)
        counts["resized"] += fitted.resized
        counts["padded"] += fitted.padded
        counts["masks_kept_by_area"] += fitted.mask_rescued
        if fitted.mask_rescued:
            notes.append("nearest resize lost every defect pixel: mask kept where the area resample covers it")
        keep = grey_jpeg and not (fitted.resized or fitted.padded)  # no second JPEG generation loss
        storage.write_bytes(f"{IMAGES_DIR}/{item.image_id}", data if keep else encode_jpeg(fitted.pixels))
        if class_id is not None:
            rows.append((item.image_id, str(class_id), encode_rle(fitted.mask)))
        source_mask = item.pair.mask.as_posix() if item.pair.mask else ""
        name = classes[class_id] if class_id is not None else ""
        mapping.append((item.image_id, item.pair.image.as_posix(), source_mask, name, "; ".join(notes)))
        progress(done)
    return rows, mapping, counts


def import_masks(
    src: str | Path,
    out: str | Path,
    *,
    image_size: tuple[int, int] | None = None,
    fit: Fit = "resize",
    class_from: ClassFrom = "folder",
    mask_patterns: Sequence[str] = DEFAULT_MASK_PATTERNS,
    clean_folders: Sequence[str] = DEFAULT_CLEAN_FOLDERS,
    empty_mask: Policy = "clean",
    missing_mask: Policy = "error",
    progress: Callable[[int, int], None] | None = None,
) -> MaskImportSummary:
    """Convert the image-and-mask tree at ``src`` into the Severstal layout at ``out`` (new or empty folder, or ``s3://``).

    ``image_size=(height, width)`` is the output size (default: the most common image size). Bad input
    (a missing or unpaired mask, a mask of another size, an unreadable file, defect pixels in a clean folder)
    raises a typed error naming the file, and nothing appears at ``out``. ``progress(done, total)`` counts
    both passes (headers, then pixels), so ``total`` is twice the image count.
    """
    started = time.perf_counter()
    src = Path(src)
    choices: dict[str, tuple[str, tuple[str, ...]]] = {
        "fit": (fit, ("resize", "pad")),
        "class_from": (class_from, ("folder", "single")),
        "empty_mask": (empty_mask, ("clean", "error")),
        "missing_mask": (missing_mask, ("clean", "error")),
    }
    for option, (value, allowed) in choices.items():
        if value not in allowed:
            raise ValueError(f"{option} must be one of {', '.join(allowed)}, got {value!r}")
    if image_size is not None and min(image_size) < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    check_source(src, out)
    pairs = pair_images(src, mask_patterns)
    if not pairs:
        raise DatasetError("no image files (jpg, png, bmp, tif) found", file=str(src))
    classes, class_ids = _classes(src, pairs, class_from, clean_folders)
    report = progress or (lambda done, total: None)
    total = 2 * len(pairs)
    with staged_dataset(out) as (storage, root):
        items = _plan(src, pairs, class_ids, missing_mask, len(mask_patterns), lambda done: report(done, total))
        size = image_size or most_common_size([(item.height, item.width) for item in items])
        rows, mapping, counts = _write(src, storage, items, classes, size, fit, empty_mask, lambda d: report(d, total))
        storage.write_bytes(MAPPING_FILE, pd.DataFrame(mapping, columns=MAPPING_COLUMNS).to_csv(index=False).encode())
        labels = pd.DataFrame(rows, columns=LABEL_COLUMNS)
        meta = DatasetMeta(
            name=src.resolve().name, classes=classes, height=size[0], width=size[1], image_id_pattern=IMAGE_ID_PATTERN
        )
        write_labels_and_meta(storage, labels, meta)
    per_class = Counter(int(class_id) for _, class_id, _ in rows)
    return MaskImportSummary(
        root=root,
        images=len(items),
        classes=classes,
        masks_per_class={i: per_class.get(i, 0) for i in classes},
        seconds=time.perf_counter() - started,
        clean=len(items) - len(rows),
        height=size[0],
        width=size[1],
        fit=fit,
        resized=counts["resized"],
        padded=counts["padded"],
        empty_masks_clean=counts["empty_masks_clean"],
        missing_masks_clean=counts["missing_masks_clean"],
        masks_kept_by_area=counts["masks_kept_by_area"],
        renamed=counts["renamed"],
        mapping_file=MAPPING_FILE,
    )
