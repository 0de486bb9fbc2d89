"""Which files of an image-and-mask folder tree are images, which are their masks, which folder names their
class, and which safe ImageId each image gets: everything decided before a pixel is decoded.

A mask pattern is a path relative to the image's folder with ``{stem}`` (the image's name without suffix)
and optionally ``{folder}`` (the image's folder name): ``{stem}.png`` finds ``x.png`` beside ``x.jpg``,
``../masks/{stem}.png`` a parallel ``masks/`` folder. Patterns are tried in order, file names compared
case-insensitively; the first existing file other than the image itself is its mask.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from steelqc.data.errors import DatasetError, MaskError
from steelqc.data.import_common import IMAGE_SUFFIXES

DEFAULT_MASK_PATTERNS = (
    "{stem}_mask.png",
    "{stem}_mask.bmp",
    "{stem}_label.png",
    "{stem}_label.bmp",  # KolektorSDD
    "{stem}_gt.png",  # KolektorSDD2 (_GT.png)
    "label/{stem}_label.png",  # DAGM 2007 (Label/x_label.PNG)
    "../masks/{stem}.png",
    "../masks/{stem}_mask.png",
    "../masks/{stem}.bmp",
    "../../ground_truth/{folder}/{stem}_mask.png",  # MVTec AD
    "{stem}.png",  # magnetic tile (x.jpg + x.png); last, since any PNG could be an image
    "{stem}.bmp",
)
DEFAULT_CLEAN_FOLDERS = ("MT_Free", "Free", "clean", "good", "ok", "normal", "defect_free", "no_defect")
# Folders between a class folder and its images (MT_Crack/Imgs/, Crack/images/, Class1/Train/): never a class.
INTERMEDIATE_FOLDERS = frozenset({"imgs", "img", "images", "image", "jpegimages", "train", "test", "val", "valid"})
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]+")
_MAX_STEM = 120  # ImageIds stay well inside every file system's 255-byte name limit


@dataclass(frozen=True)
class PairedImage:
    """An image and its mask, as paths relative to the source folder; ``folder`` names the class (None: none)."""

    image: Path
    mask: Path | None
    folder: str | None


@lru_cache(maxsize=256)
def _name_regex(name: str) -> re.Pattern[str]:
    return re.compile(re.escape(name).replace(re.escape("{stem}"), ".+"), flags=re.IGNORECASE)


@dataclass(frozen=True)
class MaskPattern:
    """One ``--mask-pattern``: where an image's mask is, and what a file named like a mask looks like."""

    text: str

    def __post_init__(self) -> None:
        try:
            probe = self.text.format(stem="x", folder="f")
        except (KeyError, IndexError, ValueError):
            raise ValueError(f"mask pattern {self.text!r} may only use {{stem}} and {{folder}}") from None
        if "{stem}" not in self.text.rsplit("/", 1)[-1] or Path(probe).suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(f"mask pattern {self.text!r} needs {{stem}} in a file name ending in an image suffix")

    def candidate(self, folder: str, stem: str) -> str:
        """The mask path this pattern names for image ``stem`` in ``folder`` (posix, relative to the source),
        normalised and lower-cased. Plain strings: pathlib made pairing cost a second on 877 images."""
        name = self.text.format(stem=stem, folder=posixpath.basename(folder))
        return posixpath.normpath(posixpath.join(folder, name)).lower()

    def marks(self, path: Path) -> bool:
        """Whether ``path`` is named like one of this pattern's masks, so it is never taken as an image.

        ``{stem}.png`` marks nothing (a PNG beside nothing is an image); ``{stem}_mask.png`` or a ``masks/``
        folder do.
        """
        *folders, name = self.text.split("/")
        literal = [folder for folder in folders if folder not in ("..", ".")]
        if not literal and re.fullmatch(r"\{stem\}\.\w+", name):
            return False
        if not re.fullmatch(_name_regex(name), path.name):
            return False
        parents = path.parent.parts[len(path.parent.parts) - len(literal) :] if literal else ()
        return len(parents) == len(literal) and all(
            want == "{folder}" or want.lower() == have.lower() for want, have in zip(literal, parents, strict=True)
        )


def source_files(src: Path) -> list[Path]:
    """Image files under ``src`` (relative, sorted), skipping hidden files and folders (``._x.jpg``, ``.git``)."""
    files: list[Path] = []
    for folder, subfolders, names in os.walk(src):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        base = Path(folder).relative_to(src)
        files.extend(base / n for n in names if not n.startswith(".") and Path(n).suffix.lower() in IMAGE_SUFFIXES)
    return sorted(files)


def class_folder(image: Path) -> str | None:
    """The nearest folder above ``image`` that can name a class: ``MT_Crack/Imgs/x.jpg`` → ``MT_Crack``."""
    for name in reversed(image.parent.parts):
        if name.lower() not in INTERMEDIATE_FOLDERS:
            return name
    return None


def pair_images(src: Path, patterns: Sequence[str]) -> list[PairedImage]:
    """Every image under ``src`` with its mask (or None). A file that is some image's mask, or is named like
    a mask, is never an image; one named like a mask that pairs with no image is a :class:`MaskError` (its
    image is missing), and so is one mask claimed by two images."""
    compiled = [MaskPattern(p) for p in patterns]
    files = source_files(src)
    by_key = {f.as_posix().lower(): f for f in files}
    mask_of: dict[Path, Path] = {}
    for path in files:
        folder, stem = path.parent.as_posix(), path.stem
        for pattern in compiled:
            found = by_key.get(pattern.candidate(folder, stem))
            if found is not None and found != path:
                mask_of[path] = found
                break
    masks = set(mask_of.values())
    images = [f for f in files if f not in masks and not any(p.marks(f) for p in compiled)]
    orphans = sorted(set(files) - masks - set(images))
    if orphans:
        raise MaskError("named like a mask but no image pairs with it (image missing?)", file=str(src / orphans[0]))
    claimed: dict[Path, Path] = {}
    for image in images:
        mask = mask_of.get(image)
        if mask is not None and mask in claimed:
            raise MaskError(f"one mask for two images, {claimed[mask]} and {image}", file=str(src / mask))
        if mask is not None:
            claimed[mask] = image
    return [PairedImage(image, mask_of.get(image), class_folder(image)) for image in images]


def class_names(folders: Iterable[str]) -> dict[str, str]:
    """Folder name → class name, without a prefix all (two or more) class folders share up to a separator:
    ``MT_Crack``, ``MT_Free`` → ``Crack``, ``Free``; ``Class1``, ``Class2`` stay as they are."""
    unique = sorted(set(folders))
    if len(unique) < 2:
        return {name: name for name in unique}
    prefix = os.path.commonprefix(unique)
    cut = max(prefix.rfind(separator) for separator in "_- .") + 1
    return {name: name[cut:] for name in unique} if all(name[cut:] for name in unique) else {n: n for n in unique}


def is_clean_folder(folder: str, class_name: str, clean_folders: Iterable[str]) -> bool:
    """Whether a folder holds defect-free images, by its own name or its class name (case-insensitive)."""
    names = {name.lower() for name in clean_folders}
    return folder.lower() in names or class_name.lower() in names


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("_")[:_MAX_STEM] or "image"


def assign_image_ids(images: Sequence[Path]) -> list[str]:
    """A safe, unique ImageId (``<name>.jpg``, :data:`~steelqc.data.import_common.IMAGE_ID_PATTERN`) per image.

    The file's stem where it is safe and no other image shares it (ignoring case: a case-insensitive file
    system would merge them); unsafe characters become ``_``; images sharing a stem (``Crack/001.jpg``,
    ``Free/001.jpg``) are all named by their relative path (``Crack_001``), numbered if that still collides.
    """
    stems = [_safe(image.stem) for image in images]
    shared = Counter(stem.lower() for stem in stems)
    wanted = [
        s if shared[s.lower()] == 1 else _safe(i.with_suffix("").as_posix()) for s, i in zip(stems, images, strict=True)
    ]
    taken: set[str] = set()
    ids: list[str] = []
    for name in wanted:
        unique, n = name, 2
        while unique.lower() in taken:
            unique, n = f"{name}-{n}", n + 1
        taken.add(unique.lower())
        ids.append(f"{unique}.jpg")
    return ids


def check_source(src: Path, out: str | Path) -> None:
    """Refuse a missing source folder and an output inside it (a second import would read the first's output)."""
    if not src.is_dir():
        raise DatasetError("source folder not found", file=str(src))
    if not str(out).startswith("s3://") and Path(out).expanduser().resolve().is_relative_to(src.resolve()):
        raise DatasetError("output folder lies inside the source folder", file=str(out))
