"""The patch grid and index on real images: 10 Severstal strips (PNG under .jpg) and NEU-DET 200×200 images."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from steelqc.config import PatchSettings
from steelqc.data.dataset import Dataset
from steelqc.data.images import read_image
from steelqc.patches import build_patch_index, extract_patches


def reassemble(patches: np.ndarray, positions: list[tuple[int, int]], shape: tuple[int, int]) -> np.ndarray:
    image = np.zeros(shape, dtype=np.uint8)
    for patch, (y, x) in zip(patches, positions, strict=True):
        window = image[y : y + patch.shape[0], x : x + patch.shape[1]]
        window[...] = patch[: window.shape[0], : window.shape[1]]
    return image


def test_severstal_strips_are_fully_covered_by_twelve_patches(severstal_sample: Path) -> None:
    for path in sorted((severstal_sample / "train_images").iterdir()):
        pixels = read_image(path)
        patches, positions = extract_patches(pixels, 256, 128, "reflect")
        assert len(patches) == 12 and positions[-1] == (0, 1344)
        np.testing.assert_array_equal(reassemble(patches, positions, pixels.shape), pixels)


@pytest.mark.parametrize(("size", "stride", "count"), [(64, 32, 36), (256, 128, 1)])
def test_neu_det_images_are_covered_at_any_patch_size(neu_det: Path, size: int, stride: int, count: int) -> None:
    for path in sorted((neu_det / "images").iterdir())[:: 200]:
        pixels = read_image(path)
        patches, positions = extract_patches(pixels, size, stride, "reflect")
        assert len(patches) == count and patches.shape[1:] == (size, size)
        np.testing.assert_array_equal(reassemble(patches, positions, pixels.shape), pixels)


def test_index_of_the_real_severstal_sample(severstal_sample: Path, tmp_path: Path) -> None:
    root = tmp_path / "sample"
    shutil.copytree(severstal_sample / "train_images", root / "train_images")
    (root / "train.csv").write_text("ImageId,ClassId,EncodedPixels\n")  # image-level labels only: no masks
    index = build_patch_index(Dataset.open(str(root)), PatchSettings(), workers=2)
    assert len(index) == 120 and index["label"].eq(0).all()
    assert set(index.drop_duplicates("image_id")["split"]) == {"train", "val", "test"}
    assert index.groupby("image_id")["split"].nunique().eq(1).all()
