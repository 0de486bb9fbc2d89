"""The generator: same seed same bytes, masks only on visibly changed pixels, the real class mix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from steelqc.data.dataset import Dataset, DatasetMeta
from steelqc.data.errors import DatasetError
from steelqc.data.rle import decode_rle
from steelqc.data.synth import MIN_VISIBLE_CHANGE, SEVERSTAL_COMBINATIONS, generate_dataset, generate_strip


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    first = generate_dataset(tmp_path / "a", 6, seed=11, contrast=1.2)
    generate_dataset(tmp_path / "b", 6, seed=11, contrast=1.2)
    generate_dataset(tmp_path / "c", 6, seed=12, contrast=1.2)
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert set(a) == {"train.csv", "dataset.yaml", *(f"train_images/{i}" for i in first.image_ids)}
    assert a == b
    assert a["train_images/" + first.image_ids[0]] not in c.values()


def test_layout_reads_back_as_a_dataset(synthetic_dataset: Path) -> None:
    ds = Dataset.open(str(synthetic_dataset))
    assert len(ds.image_ids) == 24
    assert ds.meta == DatasetMeta(name="synthetic-severstal")
    assert all(len(i) == 13 and i.endswith(".jpg") for i in ds.image_ids)
    assert {int(c) for c in ds.labels["ClassId"]} == {1, 2, 3, 4}  # the rare class 2 even in 24 images
    assert ds.labels["EncodedPixels"].str.len().min() > 0
    defective = ds.labels["ImageId"].nunique()
    assert defective == round(24 * 6666 / 12568)
    for image_id in ds.image_ids[:4]:
        assert ds.load_image(image_id).shape == (256, 1600)


@pytest.mark.parametrize("seed", range(12))
def test_masks_cover_exactly_the_changed_pixels(seed: int) -> None:
    classes = [(1,), (2,), (3,), (4,), (3, 4), (1, 2, 3)][seed % 6]
    clean, none = generate_strip(np.random.default_rng(seed), defective_classes=())
    pixels, masks = generate_strip(np.random.default_rng(seed), defective_classes=classes, contrast=0.6 + seed / 10)
    assert none == {} and sorted(masks) == sorted(classes)
    diff = np.abs(pixels.astype(int) - clean.astype(int))
    union = np.zeros_like(diff, dtype=bool)
    for mask in masks.values():
        assert mask.any()
        assert not (union & mask).any()  # classes never claim the same pixel
        union |= mask
        assert diff[mask].min() >= MIN_VISIBLE_CHANGE
    assert not diff[~union].any()  # nothing was drawn outside the masks


def test_classes_look_different() -> None:
    """Pits are small, vertical marks are tall and thin, patches are large and dark."""
    areas: dict[int, list[int]] = {1: [], 2: [], 4: []}
    for seed in range(20):
        for class_id in areas:
            pixels, masks = generate_strip(np.random.default_rng(seed), defective_classes=(class_id,))
            areas[class_id].append(int(masks[class_id].sum()))
            if class_id == 2:
                ys, xs = np.nonzero(masks[2])
                assert np.ptp(ys) > 8
            if class_id == 4:
                clean, _ = generate_strip(np.random.default_rng(seed))
                assert pixels[masks[4]].mean() < clean[masks[4]].mean() - 20
    assert np.median(areas[1]) < 300 < np.median(areas[4])
    assert np.median(areas[4]) > 5000


def test_monitoring_shifts_brightness_and_blur() -> None:
    plain, _ = generate_strip(np.random.default_rng(3))
    brighter, _ = generate_strip(np.random.default_rng(3), brightness=20)
    blurred, _ = generate_strip(np.random.default_rng(3), blur_sigma=2.0)
    strip = plain > 20  # leave out the black region where the strip ends
    assert 15 < float(brighter[strip].mean()) - float(plain[strip].mean()) < 21
    assert (
        np.abs(np.diff(blurred.astype(float), axis=1)).mean()
        < 0.5 * np.abs(np.diff(plain.astype(float), axis=1)).mean()
    )


def test_class_mix_roughly_real_on_200_images(tmp_path: Path) -> None:
    summary = generate_dataset(tmp_path / "d", 200, seed=5, height=64, width=400)
    ds = Dataset.open(str(tmp_path / "d"))
    per_image = ds.labels.groupby("ImageId")["ClassId"].apply(lambda c: tuple(sorted(int(x) for x in c)))
    assert len(per_image) == summary.defective == 106  # 53%
    total = sum(SEVERSTAL_COMBINATIONS.values())
    for combo, count in SEVERSTAL_COMBINATIONS.items():
        expected = count / total * 106
        assert abs((per_image == combo).sum() - expected) <= max(1.5, 0.1 * expected), combo
    assert (per_image.map(len) > 1).sum() >= 5  # several classes on some images
    class_counts = ds.labels["ClassId"].astype(int).value_counts()
    assert class_counts.idxmax() == 3 and class_counts[2] == min(class_counts)
    for row in ds.labels.itertuples():
        assert decode_rle(row.EncodedPixels, 64, 400).any()


def test_knobs_and_refusals(tmp_path: Path) -> None:
    def area(class_id: int, **knobs: float) -> int:
        return sum(
            int(generate_strip(np.random.default_rng(s), defective_classes=(class_id,), **knobs)[1][class_id].sum())
            for s in range(6)
        )

    assert area(4, size_scale=1.5) > 2 * area(4, size_scale=0.5)
    assert area(1, size_scale=2.0) > 2 * area(1, size_scale=1.0)
    faint, _ = generate_strip(np.random.default_rng(2), defective_classes=(4,), contrast=0.5)
    strong, masks = generate_strip(np.random.default_rng(2), defective_classes=(4,), contrast=2.0)
    clean, _ = generate_strip(np.random.default_rng(2))
    assert np.abs(strong.astype(int) - clean)[masks[4]].mean() > np.abs(faint.astype(int) - clean)[masks[4]].mean()
    with pytest.raises(ValueError, match="unknown defect classes"):
        generate_strip(np.random.default_rng(0), defective_classes=(5,))
    with pytest.raises(ValueError, match="positive"):
        generate_strip(np.random.default_rng(0), contrast=0)
    generate_dataset(tmp_path / "x", 2, seed=0)
    with pytest.raises(DatasetError, match="already holds a dataset"):
        generate_dataset(tmp_path / "x", 2, seed=0)
