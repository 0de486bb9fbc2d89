"""``import_masks`` on the real magnetic-tile set with no options: counts per class, masks exact after the fit.

One import (~5 s) shared by the module. Full GX validation of the output passes too (``steelqc validate``,
~12 s, mostly fixed Great Expectations cost), so here only the cheap part of that contract is checked.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from steelqc.data.dataset import Dataset
from steelqc.data.mask_importer import MAPPING_FILE, MaskImportSummary, import_masks

DEFECT_FOLDERS = ["MT_Blowhole", "MT_Break", "MT_Crack", "MT_Fray", "MT_Uneven"]


@pytest.fixture(scope="module")
def imported(magnetic_tile: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Dataset, MaskImportSummary]:
    summary = import_masks(magnetic_tile, tmp_path_factory.mktemp("mt") / "dataset")
    return Dataset.open(summary.root), summary


def _source_images(root: Path, folder: str) -> list[Path]:
    return sorted((root / folder / "Imgs").glob("*.jpg"))


def test_counts_per_class_and_the_empty_masks(magnetic_tile: Path, imported: tuple[Dataset, MaskImportSummary]) -> None:
    ds, summary = imported
    assert ds.meta.classes == {1: "Blowhole", 2: "Break", 3: "Crack", 4: "Fray", 5: "Uneven"}
    assert summary.masks_per_class == {1: 77, 2: 52, 3: 41, 4: 23, 5: 62}
    assert (summary.images, summary.clean, summary.empty_masks_clean) == (877, 622, 3)
    assert len(ds.image_ids) == 877 and ds.labels["ImageId"].is_unique  # one class per defective image
    mapping = pd.read_csv(Path(summary.root) / MAPPING_FILE, dtype=str, keep_default_na=False)
    noted = mapping[mapping["note"] != ""]
    assert len(noted) == 3 and noted["image"].str.startswith("MT_Uneven/").all() and (noted["class"] == "").all()
    for folder, class_id in zip(DEFECT_FOLDERS, range(1, 6), strict=True):  # the source, counted independently
        written = int((noted["image"].str.startswith(f"{folder}/")).sum())
        assert len(_source_images(magnetic_tile, folder)) == summary.masks_per_class[class_id] + written
    assert len(_source_images(magnetic_tile, "MT_Free")) == 619


def test_most_common_size_is_the_output_size(magnetic_tile: Path, imported: tuple[Dataset, MaskImportSummary]) -> None:
    ds, summary = imported
    sizes = Counter(Image.open(p).size[::-1] for p in sorted(magnetic_tile.glob("MT_*/Imgs/*.jpg")))
    (size, count), (_, runner_up) = sizes.most_common(2)
    assert (ds.meta.height, ds.meta.width) == size == (286, 123) and count == 5 > runner_up
    assert (summary.resized, summary.padded) == (877 - count, 0)


def test_masks_round_trip_through_rle_exactly_after_the_resize(
    magnetic_tile: Path, imported: tuple[Dataset, MaskImportSummary]
) -> None:
    ds, _ = imported
    height, width = ds.meta.height, ds.meta.width
    for class_id, folder in enumerate(DEFECT_FOLDERS, start=1):
        for image in _source_images(magnetic_tile, folder)[:3]:
            source = cv2.imread(str(image.with_suffix(".png")), cv2.IMREAD_UNCHANGED) > 0
            expected = cv2.resize(source.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
            masks = ds.masks(f"{image.stem}.jpg")
            assert np.array_equal(masks[class_id - 1], expected), image
            assert masks.sum() == expected.sum()  # nothing in the other classes


def test_output_keeps_the_dataset_contract(imported: tuple[Dataset, MaskImportSummary]) -> None:
    ds, _ = imported
    pattern = re.compile(ds.meta.image_id_pattern)
    assert all(pattern.fullmatch(image_id) for image_id in ds.image_ids)
    labelled = ds.labels["ImageId"].unique()
    assert set(labelled) <= set(ds.image_ids)
    assert all(ds.masks(image_id).any() for image_id in labelled)  # every RLE decodes, none empty
    for image_id in ds.image_ids[::100]:
        assert ds.load_image(image_id).shape == (ds.meta.height, ds.meta.width)
