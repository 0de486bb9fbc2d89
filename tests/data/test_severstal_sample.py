"""The 10 real Severstal images (PNG data under .jpg names) read through the dataset layer as 256×1600."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np

from steelqc.data.dataset import SEVERSTAL_ID_PATTERN, Dataset
from steelqc.data.images import decode_image_bytes


def test_real_sample_reads_as_256x1600(severstal_sample: Path, tmp_path: Path) -> None:
    root = tmp_path / "severstal"
    root.mkdir()
    shutil.copytree(severstal_sample / "train_images", root / "train_images")  # a symlink out of root is refused
    (root / "train.csv").write_text("ImageId,ClassId,EncodedPixels\n")
    ds = Dataset.open(str(root))
    assert len(ds.image_ids) == 10
    for image_id in ds.image_ids:
        assert re.fullmatch(SEVERSTAL_ID_PATTERN, image_id)
        decoded = decode_image_bytes(ds.image_bytes(image_id), name=image_id)
        assert decoded.format == "png"  # by content: the .jpg names hold PNG data
        pixels = ds.load_image(image_id)
        assert pixels.shape == (256, 1600) and pixels.dtype == np.uint8
        assert pixels.std() > 5  # real texture, not a grey fill
        assert ds.class_set(image_id) == () and not ds.masks(image_id).any()
