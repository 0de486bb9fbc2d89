"""What every importer shares: the image files it reads, the ImageIds it writes, its summary, and an output
folder that only appears once the import is complete."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from steelqc.data.dataset import create_dataset_storage
from steelqc.data.errors import DatasetError
from steelqc.data.storage import LocalStorage, Storage

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})
# Importers write JPEGs named after their source files; this is the dataset.yaml pattern they all satisfy.
IMAGE_ID_PATTERN = r"^[A-Za-z0-9_\-]+\.jpg$"


@dataclass(frozen=True)
class ImportSummary:
    """What an import wrote: ``masks_per_class`` counts label rows (one per image and class present)."""

    root: str
    images: int
    classes: dict[int, str]
    masks_per_class: dict[int, int]
    seconds: float


@contextmanager
def staged_dataset(out: str | Path) -> Iterator[tuple[Storage, str]]:
    """``(storage, final uri)`` for a new dataset at ``out``, which appears there only if the block completes.

    A local target must be new or an empty folder: the import writes into a hidden sibling folder, renamed
    to ``out`` at the end and deleted on any error, so an interrupted import never looks like a dataset.
    S3 has no rename: there ``train.csv`` and ``dataset.yaml`` are written last, and a prefix without them
    is not a dataset (:class:`~steelqc.data.dataset.Dataset` refuses to open it).
    """
    if str(out).startswith("s3://"):
        storage = create_dataset_storage(out)
        yield storage, storage.uri
        return
    target = Path(out).expanduser().resolve()
    create_dataset_storage(target)  # a folder holding a dataset gets the same message as everywhere else
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise DatasetError("target exists and is not an empty folder; choose a new or empty folder", file=str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.importing-", dir=target.parent))
    try:
        yield LocalStorage(staging), str(target)
        if target.exists():
            target.rmdir()
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
