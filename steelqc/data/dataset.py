"""The Severstal dataset layout, read from a local folder or ``s3://bucket/prefix``.

Layout::

    ROOT/train.csv        ImageId,ClassId,EncodedPixels (one row per non-empty mask)
                          or the older ImageId_ClassId,EncodedPixels (4 rows per image, empty masks)
    ROOT/train_images/    one file per image; an image with no label rows is defect-free
    ROOT/dataset.yaml     optional metadata: name, classes {id: name}, image height/width, ImageId pattern

Reading labels never raises on a bad *value* (validation reports those row by row); decoding a mask or
an image for training does, with the file and CSV row named.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from steelqc.config import DataSettings
from steelqc.data.errors import DatasetError, LabelFormatError, UnsafeImageIdError
from steelqc.data.images import DEFAULT_MAX_IMAGE_PIXELS, DecodedImage, check_size, decode_image_bytes
from steelqc.data.rle import decode_rle
from steelqc.data.storage import LocalStorage, Storage, open_storage

META_FILE = "dataset.yaml"
LABELS_FILE = "train.csv"
IMAGES_DIR = "train_images"
SEVERSTAL_CLASSES = {1: "pits", 2: "vertical_marks", 3: "scratches", 4: "patches"}
SEVERSTAL_ID_PATTERN = r"^[0-9a-f]{9}\.jpg$"
LABEL_COLUMNS = ["ImageId", "ClassId", "EncodedPixels"]


@dataclass(frozen=True)
class DatasetMeta:
    """What every image and label of a dataset must satisfy. Severstal's values by default."""

    name: str = "severstal"
    classes: dict[int, str] = field(default_factory=lambda: dict(SEVERSTAL_CLASSES))
    height: int = 256
    width: int = 1600
    image_id_pattern: str = SEVERSTAL_ID_PATTERN

    @property
    def class_ids(self) -> list[int]:
        return sorted(self.classes)

    def to_yaml(self) -> str:
        return yaml.safe_dump(
            {
                "name": self.name,
                "classes": {int(k): v for k, v in sorted(self.classes.items())},
                "height": self.height,
                "width": self.width,
                "image_id_pattern": self.image_id_pattern,
            },
            sort_keys=False,
        )

    @classmethod
    def from_yaml(cls, text: str, *, file: str = META_FILE) -> DatasetMeta:
        try:
            raw = yaml.safe_load(text) or {}
            classes = {int(k): str(v) for k, v in (raw.get("classes") or SEVERSTAL_CLASSES).items()}
            meta = cls(
                name=str(raw.get("name", "severstal")),
                classes=classes,
                height=int(raw.get("height", 256)),
                width=int(raw.get("width", 1600)),
                image_id_pattern=str(raw.get("image_id_pattern", SEVERSTAL_ID_PATTERN)),
            )
            re.compile(meta.image_id_pattern)
        except (yaml.YAMLError, ValueError, TypeError, AttributeError, re.error) as exc:
            raise DatasetError(f"invalid dataset metadata: {exc}", file=file) from exc
        if meta.height < 1 or meta.width < 1 or not meta.classes:
            raise DatasetError("metadata needs positive height/width and at least one class", file=file)
        return meta


def check_image_id(image_id: object, *, row: int | None = None, file: str | None = None) -> str:
    """Return ``image_id`` if it is a plain file name; raise :class:`UnsafeImageIdError` otherwise."""
    if not isinstance(image_id, str) or not image_id.strip():
        raise UnsafeImageIdError("empty ImageId", file=file, row=row)
    if "/" in image_id or "\\" in image_id or ".." in image_id or "\x00" in image_id:
        raise UnsafeImageIdError(f"ImageId {image_id!r} holds a path separator or '..'", file=file, row=row)
    return image_id


def parse_labels_csv(data: bytes, *, file: str = LABELS_FILE) -> pd.DataFrame:
    """Labels as strings in the new layout plus ``row`` (the CSV line number, header = line 1).

    Accepts both Kaggle layouts; the old one's empty masks are dropped (those images stay known via
    ``known_image_ids`` attribute in ``df.attrs``). Column problems raise :class:`LabelFormatError`.
    """
    try:
        raw = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise LabelFormatError(f"labels CSV cannot be parsed: {exc}", file=file) from exc
    except pd.errors.EmptyDataError:
        raise LabelFormatError("labels CSV is empty (no header)", file=file) from None
    if not isinstance(raw.index, pd.RangeIndex):
        # pandas takes a first data line with one field too many as "the first column is the index" and
        # shifts every column left: ImageIds would become ClassIds and the real images look clean.
        raise LabelFormatError(f"more fields than the header's {raw.shape[1]} (a stray comma?)", file=file, row=2)
    raw["row"] = np.arange(len(raw), dtype=np.int64) + 2
    if {"ImageId", "ClassId", "EncodedPixels"} <= set(raw.columns):
        labels = raw[[*LABEL_COLUMNS, "row"]].copy()
        known = labels["ImageId"].tolist()
    elif {"ImageId_ClassId", "EncodedPixels"} <= set(raw.columns):
        split = raw["ImageId_ClassId"].str.rsplit("_", n=1, expand=True)
        if split.shape[1] != 2 or split[1].isna().any():
            bad = int(raw.loc[split[1].isna(), "row"].iloc[0]) if split.shape[1] == 2 else 2
            raise LabelFormatError("ImageId_ClassId must look like '<image>_<class>'", file=file, row=bad)
        labels = pd.DataFrame(
            {"ImageId": split[0], "ClassId": split[1], "EncodedPixels": raw["EncodedPixels"], "row": raw["row"]}
        )
        known = labels["ImageId"].tolist()
        labels = labels[labels["EncodedPixels"].str.strip() != ""]
    else:
        # a CSV without its header line makes the first label row the header: show its start, not a whole RLE
        got = ", ".join(repr(_clip(str(column))) for column in raw.columns[:-1])
        raise LabelFormatError(
            f"expected the header line ImageId,ClassId,EncodedPixels (or ImageId_ClassId,EncodedPixels), "
            f"got columns {got}",
            file=file,
            row=1,
        )
    labels = labels.reset_index(drop=True)
    labels.attrs["known_image_ids"] = sorted(set(known))
    return labels


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def labels_to_csv(labels: pd.DataFrame) -> bytes:
    """The new-layout CSV (without the ``row`` column)."""
    return labels[LABEL_COLUMNS].to_csv(index=False).encode()


def create_dataset_storage(out: str | Path) -> Storage:
    """Storage for a new dataset at ``out`` (folder or ``s3://``), refusing one that already holds a dataset:
    stale images without labels would silently count as clean."""
    storage = open_storage(str(out))
    if storage.exists(LABELS_FILE) or storage.list_files(IMAGES_DIR):
        raise DatasetError("target already holds a dataset; choose an empty folder", file=storage.uri)
    return storage


def write_labels_and_meta(storage: Storage, labels: pd.DataFrame, meta: DatasetMeta) -> None:
    """Finish a new dataset: ``train.csv`` (new layout) and ``dataset.yaml``, after its images."""
    storage.write_bytes(LABELS_FILE, labels_to_csv(labels))
    storage.write_bytes(META_FILE, meta.to_yaml().encode())


@dataclass(frozen=True)
class Dataset:
    """A Severstal-layout dataset: labels, the image list, and loaders that check what they load."""

    storage: Storage
    meta: DatasetMeta
    labels: pd.DataFrame
    image_ids: tuple[str, ...]
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # larger images are refused before decoding

    @classmethod
    def open(
        cls, root: str, *, endpoint_url: str | None = None, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    ) -> Dataset:
        """Open ``root`` (folder or ``s3://``). Missing folder or CSV raises :class:`DatasetError`."""
        storage = open_storage(root, endpoint_url)
        if isinstance(storage, LocalStorage) and not storage.root.is_dir():
            raise DatasetError("dataset folder not found", file=storage.uri)
        meta = (
            DatasetMeta.from_yaml(storage.read_bytes(META_FILE).decode(), file=f"{storage.uri}/{META_FILE}")
            if storage.exists(META_FILE)
            else DatasetMeta()
        )
        if not storage.exists(LABELS_FILE):
            if storage.is_folder(LABELS_FILE):
                raise DatasetError(f"{LABELS_FILE} is a folder; it must be the labels CSV file", file=storage.uri)
            raise DatasetError(f"no {LABELS_FILE} in dataset", file=storage.uri)
        labels = parse_labels_csv(storage.read_bytes(LABELS_FILE), file=f"{storage.uri}/{LABELS_FILE}")
        image_ids = tuple(storage.list_files(IMAGES_DIR))
        return cls(storage=storage, meta=meta, labels=labels, image_ids=image_ids, max_image_pixels=max_image_pixels)

    @classmethod
    def configured(cls, root: str, data: DataSettings) -> Dataset:
        """Open ``root`` with the configured S3 endpoint and pixel budget (what every run should use)."""
        return cls.open(root, endpoint_url=data.s3_endpoint_url, max_image_pixels=data.max_image_pixels)

    @property
    def root(self) -> str:
        return self.storage.uri

    def restrict(self, image_ids: Iterable[str], label_rows: Iterable[int] | None = None) -> Dataset:
        """The same dataset limited to ``image_ids`` (and to the CSV ``label_rows`` when given): a clean manifest."""
        keep_images = set(image_ids)
        labels = self.labels[self.labels["ImageId"].isin(keep_images)]
        if label_rows is not None:
            labels = labels[labels["row"].isin(set(label_rows))]
        return replace(
            self,
            labels=labels.reset_index(drop=True),
            image_ids=tuple(i for i in self.image_ids if i in keep_images),
        )

    @cached_property
    def _rows_by_image(self) -> dict[str, list[tuple[str, str, int]]]:
        """``(ClassId, EncodedPixels, row)`` per image; plain tuples, since a DataFrame per image costs ~1 ms each."""
        rows: dict[str, list[tuple[str, str, int]]] = {}
        for image_id, class_id, encoded, row in self.labels[["ImageId", *LABEL_COLUMNS[1:], "row"]].itertuples(
            index=False
        ):
            rows.setdefault(image_id, []).append((class_id, encoded, int(row)))
        return rows

    def image_path(self, image_id: str) -> str:
        return f"{IMAGES_DIR}/{check_image_id(image_id)}"

    def image_bytes(self, image_id: str) -> bytes:
        return self.storage.read_bytes(self.image_path(image_id))

    def decode_image(self, data: bytes, image_id: str) -> DecodedImage:
        """``data`` (the bytes of ``image_id``) decoded within the dataset's pixel budget."""
        return decode_image_bytes(
            data, name=f"{self.root}/{self.image_path(image_id)}", max_pixels=self.max_image_pixels
        )

    def load_image(self, image_id: str) -> np.ndarray:
        """Grayscale pixels of one image, checked against the dataset's size."""
        pixels = self.decode_image(self.image_bytes(image_id), image_id).pixels
        return check_size(pixels, self.meta.height, self.meta.width, name=f"{self.root}/{self.image_path(image_id)}")

    def _class_index(self, class_id: str, row: int) -> int:
        """Position of ``class_id`` in ``meta.class_ids``; a ClassId outside them is a :class:`LabelFormatError`."""
        try:
            return self.meta.class_ids.index(int(class_id))
        except ValueError:
            raise LabelFormatError(
                f"ClassId {class_id!r} is not one of {self.meta.class_ids}", file=LABELS_FILE, row=row
            ) from None

    def masks(self, image_id: str) -> np.ndarray:
        """Boolean masks of shape (n_classes, H, W) in ``meta.class_ids`` order (all False when clean)."""
        stack = np.zeros((len(self.meta.classes), self.meta.height, self.meta.width), dtype=bool)
        for class_id, encoded, row in self._rows_by_image.get(image_id, []):
            index = self._class_index(class_id, row)
            stack[index] |= decode_rle(encoded, self.meta.height, self.meta.width, file=LABELS_FILE, row=row)
        return stack

    def class_set(self, image_id: str) -> tuple[int, ...]:
        """Sorted defect classes present on an image; () for a clean image. Bad ClassIds raise as in :meth:`masks`."""
        ids = self.meta.class_ids
        return tuple(sorted({ids[self._class_index(c, row)] for c, _, row in self._rows_by_image.get(image_id, [])}))
