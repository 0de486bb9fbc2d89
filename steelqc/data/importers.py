"""Convert Pascal VOC box annotations into the Severstal layout, so every stage reads one format.

Pascal VOC (e.g. NEU-DET): ``SRC/images/*.jpg`` (or ``JPEGImages/``) and ``SRC/annotations/*.xml`` (or
``Annotations/``), one XML per image. Boxes become rectangular masks; class names are kept in
``dataset.yaml`` with ids 1..K in sorted name order. Original file names are kept as ImageIds.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from steelqc.data.dataset import IMAGES_DIR, LABEL_COLUMNS, DatasetMeta, check_image_id, write_labels_and_meta
from steelqc.data.errors import DatasetError, ImageSizeError, LabelFormatError, MissingImageError, UnsafeImageIdError
from steelqc.data.images import decode_image_bytes, encode_jpeg
from steelqc.data.import_common import IMAGE_ID_PATTERN, IMAGE_SUFFIXES, ImportSummary, staged_dataset
from steelqc.data.rle import encode_rle

_IMAGE_DIRS = ("images", "JPEGImages")
_ANNOTATION_DIRS = ("annotations", "Annotations")


@dataclass(frozen=True)
class VocImportSummary(ImportSummary):
    """What a VOC import wrote, with the number of boxes read."""

    boxes: int


@dataclass(frozen=True)
class _Box:
    name: str
    xmin: int
    ymin: int
    xmax: int
    ymax: int


def _find_dir(src: Path, candidates: tuple[str, ...]) -> Path:
    for name in candidates:
        if (src / name).is_dir():
            return src / name
    raise DatasetError(f"no {' or '.join(candidates)} folder in the VOC dataset", file=str(src))


def _parse_annotation(path: Path) -> tuple[str, list[_Box]]:
    """The image stem an XML annotates and its boxes (VOC pixel coordinates: 1-based, inclusive)."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise LabelFormatError(f"not valid XML: {exc}", file=str(path)) from None
    filename = (root.findtext("filename") or "").strip()
    stem = Path(filename).stem if filename else path.stem
    boxes = []
    for i, obj in enumerate(root.iter("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        bndbox = obj.find("bndbox")
        if not name or bndbox is None:
            raise LabelFormatError(f"object {i} has no name or no bndbox", file=str(path))
        try:
            coords = [int(round(float(bndbox.findtext(key) or ""))) for key in ("xmin", "ymin", "xmax", "ymax")]
        except ValueError:
            raise LabelFormatError(
                f"object {i} ({name}) has a missing or non-numeric box coordinate", file=str(path)
            ) from None
        boxes.append(_Box(name, *coords))
    return stem, boxes


def _check_box(box: _Box, height: int, width: int, *, file: str) -> None:
    if not (1 <= box.xmin <= box.xmax <= width and 1 <= box.ymin <= box.ymax <= height):
        raise LabelFormatError(
            f"box {box.name} ({box.xmin},{box.ymin})-({box.xmax},{box.ymax}) lies outside the {width}x{height} image",
            file=file,
        )


def _scaled_span(low: int, high: int, source: int, target: int) -> tuple[int, int]:
    """0-based half-open pixel span of the 1-based inclusive box side ``low..high`` after resizing.

    Scaling the box, not resizing its mask, so a box never vanishes: a nearest-neighbour mask resize
    drops boxes thinner than the scale step, silently losing labelled defects.
    """
    start = (low - 1) * target // source
    stop = -(-high * target // source)  # ceiling: the scaled box covers every pixel the box touches
    return start, min(target, max(stop, start + 1))


@dataclass(frozen=True)
class _Item:
    xml: Path
    image_path: Path
    image_id: str
    height: int
    width: int
    boxes: list[_Box]


def _check_items(
    annotations: dict[Path, tuple[str, list[_Box]]],
    images_by_stem: dict[str, Path],
    image_size: tuple[int, int] | None,
    progress: Callable[[int], None],
) -> list[_Item]:
    """Every check that needs the images (they exist, decode, hold their boxes, share one size) before writing."""
    items: list[_Item] = []
    seen: set[str] = set()
    for done, (xml, (stem, boxes)) in enumerate(annotations.items(), start=1):
        image_path = images_by_stem.get(stem)
        if image_path is None:
            raise MissingImageError(f"annotated image {stem!r} not found", file=str(xml))
        image_id = check_image_id(f"{stem}.jpg", file=str(xml))
        if not re.fullmatch(IMAGE_ID_PATTERN, image_id):
            raise UnsafeImageIdError(f"file name {image_id!r} does not match {IMAGE_ID_PATTERN}", file=str(image_path))
        if image_id in seen:
            raise LabelFormatError(f"a second annotation for {image_id}", file=str(xml))
        seen.add(image_id)
        height, width = decode_image_bytes(image_path.read_bytes(), name=str(image_path)).pixels.shape
        for box in boxes:
            _check_box(box, height, width, file=str(xml))
        if image_size is None and items and (height, width) != (items[0].height, items[0].width):
            raise ImageSizeError(
                f"image is {height}x{width} but {items[0].image_id} is {items[0].height}x{items[0].width}; "
                "pass image_size to resize",
                file=str(image_path),
            )
        items.append(_Item(xml, image_path, image_id, height, width, boxes))
        progress(done)
    return items


def import_voc(
    src: str | Path,
    out: str | Path,
    *,
    image_size: tuple[int, int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> VocImportSummary:
    """Convert a Pascal VOC dataset at ``src`` into the Severstal layout at ``out`` (folder or ``s3://``).

    ``image_size=(height, width)`` resizes every image (boxes scale with it); otherwise all images must share
    one size. Bad XML, a missing image, an image without annotation, or a box outside its image raises a
    typed error naming the file, before anything is written (and the output only appears once complete:
    :func:`~steelqc.data.import_common.staged_dataset`). ``progress(done, total)`` counts both passes
    (checking, then writing), so ``total`` is twice the image count.
    """
    started = time.perf_counter()
    src = Path(src)
    image_dir, annotation_dir = _find_dir(src, _IMAGE_DIRS), _find_dir(src, _ANNOTATION_DIRS)
    images_by_stem: dict[str, Path] = {}
    for path in sorted(image_dir.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            if path.stem in images_by_stem:  # one would silently replace the other
                raise DatasetError(f"two images named {path.stem!r} ({images_by_stem[path.stem].name})", file=str(path))
            images_by_stem[path.stem] = path
    xml_files = sorted(annotation_dir.glob("*.xml"))
    if not xml_files:
        raise DatasetError("no *.xml annotations", file=str(annotation_dir))
    annotations = {xml: _parse_annotation(xml) for xml in xml_files}
    orphans = sorted(set(images_by_stem) - {stem for stem, _ in annotations.values()})
    if orphans:
        raise LabelFormatError("image has no annotation XML", file=str(images_by_stem[orphans[0]]))
    names = sorted({box.name for _, boxes in annotations.values() for box in boxes})
    if not names:
        raise DatasetError("annotations hold no objects", file=str(annotation_dir))
    class_ids = {name: i for i, name in enumerate(names, start=1)}
    with staged_dataset(out) as (storage, root):
        total = 2 * len(annotations)
        report = progress or (lambda done, total: None)
        items = _check_items(annotations, images_by_stem, image_size, lambda done: report(done, total))
        height, width = image_size or (items[0].height, items[0].width)
        rows: list[tuple[str, str, str]] = []
        for done, item in enumerate(items, start=len(items) + 1):
            data = item.image_path.read_bytes()
            masks = np.zeros((len(names), height, width), dtype=bool)
            for box in item.boxes:
                y0, y1 = _scaled_span(box.ymin, box.ymax, item.height, height)
                x0, x1 = _scaled_span(box.xmin, box.xmax, item.width, width)
                masks[class_ids[box.name] - 1, y0:y1, x0:x1] = True
            if (item.height, item.width) != (height, width):
                pixels = decode_image_bytes(data, name=str(item.image_path)).pixels
                data = encode_jpeg(cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA))
            elif item.image_path.suffix.lower() not in {".jpg", ".jpeg"}:
                data = encode_jpeg(decode_image_bytes(data, name=str(item.image_path)).pixels)
            storage.write_bytes(f"{IMAGES_DIR}/{item.image_id}", data)
            rows.extend((item.image_id, str(k + 1), encode_rle(mask)) for k, mask in enumerate(masks) if mask.any())
            report(done, total)
        labels = pd.DataFrame(rows, columns=LABEL_COLUMNS)
        meta = DatasetMeta(
            name=src.resolve().name,
            classes={i: name for name, i in class_ids.items()},
            height=height,
            width=width,
            image_id_pattern=IMAGE_ID_PATTERN,
        )
        write_labels_and_meta(storage, labels, meta)
    counts = labels["ClassId"].astype(int).value_counts()
    return VocImportSummary(
        root=root,
        images=len(items),
        boxes=sum(len(item.boxes) for item in items),
        classes=meta.classes,
        masks_per_class={i: int(counts.get(i, 0)) for i in class_ids.values()},
        seconds=time.perf_counter() - started,
    )
