"""Patch grid coverage, the per-component label rule, by-image splits and the patch index."""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from steelqc.cli import app
from steelqc.config import PatchSettings
from steelqc.data.dataset import Dataset
from steelqc.data.errors import ImageDecodeError, ImageSizeError, MissingImageError
from steelqc.data.images import encode_png, pixel_digest, read_image
from steelqc.patches import (
    PatchIndexError,
    build_patch_index,
    extract_patches,
    grid_positions,
    ordered_parallel_map,
    patch_grid,
    patch_labels,
    read_index,
    split_images,
    write_index,
)

STRIP = (256, 1600)
SMALL = PatchSettings(size=32, stride=16)


def strip_labels(mask: np.ndarray, min_defect_pixels: int = 32) -> np.ndarray:
    """Labels of the default 256-px grid on a 256×1600 strip for one class mask."""
    positions = patch_grid(*STRIP, 256, 128)
    labels, _ = patch_labels(mask[np.newaxis], positions, 256, min_defect_pixels)
    return labels


def positive_xs(labels: np.ndarray) -> list[int]:
    return [x for (_, x), positive in zip(patch_grid(*STRIP, 256, 128), labels, strict=True) if positive]


# --- grid ---------------------------------------------------------------------------------------------


def test_strip_grid_has_twelve_patches_with_the_last_flush_with_the_right_edge() -> None:
    assert grid_positions(1600, 256, 128) == [0, 128, 256, 384, 512, 640, 768, 896, 1024, 1152, 1280, 1344]
    assert patch_grid(*STRIP, 256, 128) == [(0, x) for x in grid_positions(1600, 256, 128)]


def test_grid_for_neu_det_size_and_short_axes() -> None:
    assert grid_positions(200, 64, 32) == [0, 32, 64, 96, 128, 136]
    assert grid_positions(256, 256, 128) == [0]
    assert grid_positions(100, 256, 128) == [0]
    assert len(patch_grid(200, 200, 64, 32)) == 36


def test_stride_larger_than_size_is_refused() -> None:
    with pytest.raises(ValueError, match="uncovered"):
        grid_positions(1600, 128, 256)


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 300),
    width=st.integers(1, 700),
    size=st.integers(8, 128),
    stride_fraction=st.floats(0.05, 1.0),
    pad_mode=st.sampled_from(["reflect", "constant", "edge"]),
)
def test_union_of_patches_is_the_whole_image(
    height: int, width: int, size: int, stride_fraction: float, pad_mode: str
) -> None:
    stride = max(1, int(size * stride_fraction))
    pixels = np.random.default_rng(height * width).integers(0, 256, (height, width), dtype=np.uint8)
    patches, positions = extract_patches(pixels, size, stride, pad_mode)
    covered = np.zeros((height, width), dtype=bool)
    rebuilt = np.zeros_like(pixels)
    for patch, (y, x) in zip(patches, positions, strict=True):
        assert patch.shape == (size, size)
        window = np.s_[y : y + size, x : x + size]
        h, w = covered[window].shape
        covered[window] = True
        rebuilt[window] = patch[:h, :w]
    assert covered.all()
    np.testing.assert_array_equal(rebuilt, pixels)
    assert len(set(positions)) == len(positions)


def test_small_image_is_padded_with_the_configured_mode() -> None:
    pixels = np.full((100, 150), 200, dtype=np.uint8)
    patches, positions = extract_patches(pixels, 256, 128, "constant")
    assert positions == [(0, 0)] and patches.shape == (1, 256, 256)
    assert (patches[0, :100, :150] == 200).all() and (patches[0, 100:] == 0).all() and (patches[0, :, 150:] == 0).all()
    reflected, _ = extract_patches(pixels, 256, 128, "reflect")
    assert (reflected == 200).all()


# --- label rule ---------------------------------------------------------------------------------------


def test_tiny_defect_inside_a_patch_counts() -> None:
    mask = np.zeros(STRIP, dtype=bool)
    mask[100:103, 700:703] = True  # 9 px, far below min_defect_pixels
    assert positive_xs(strip_labels(mask)) == [512, 640]


def test_large_defect_grazing_a_patch_by_a_few_pixels_does_not_count() -> None:
    mask = np.zeros(STRIP, dtype=bool)
    mask[0:30, 383:583] = True  # 6,000 px; the patch at x=128 holds one column (30 px < 32)
    assert positive_xs(strip_labels(mask)) == [256, 384, 512]


def test_defect_in_the_last_64_columns_is_labelled_by_the_flush_patch() -> None:
    mask = np.zeros(STRIP, dtype=bool)
    mask[10:15, 1590:1595] = True
    assert positive_xs(strip_labels(mask)) == [1344]


def test_defect_split_across_patches_counts_where_enough_of_it_lies() -> None:
    mask = np.zeros(STRIP, dtype=bool)
    mask[0:8, 250:263] = True  # 104 px: 48 left of x=256, 56 right of it
    assert positive_xs(strip_labels(mask)) == [0, 128, 256]
    thin = np.zeros(STRIP, dtype=bool)
    thin[0:20, 255:257] = True  # 40 px: each side of x=256 holds 20 < min(32, 40)
    assert positive_xs(strip_labels(thin)) == [128]


def test_components_are_eight_connected() -> None:
    mask = np.zeros(STRIP, dtype=bool)
    mask[np.arange(40), 1140 + np.arange(40)] = True  # one diagonal stroke of 40 px
    # x=896 sees 12 px and x=1152 sees 28 px of a 40-px component: both below 32.
    assert positive_xs(strip_labels(mask)) == [1024]


def test_min_defect_pixels_is_configurable() -> None:
    mask = np.zeros(STRIP, dtype=bool)
    mask[0:30, 383:583] = True
    assert positive_xs(strip_labels(mask, min_defect_pixels=1)) == [128, 256, 384, 512]


def test_defect_pixels_are_counted_per_class() -> None:
    masks = np.zeros((4, *STRIP), dtype=bool)
    masks[0, 0:2, 0:5] = True  # class 1: 10 px in patch x=0 only
    masks[2, 0:10, 300:310] = True  # class 3: 100 px in patches x=128 and x=256
    positions = patch_grid(*STRIP, 256, 128)
    labels, px = patch_labels(masks, positions, 256, 32)
    assert px.shape == (12, 4)
    assert px[:, 0].tolist() == [10] + [0] * 11
    assert px[:, 2].tolist() == [0, 100, 100] + [0] * 9
    assert not px[:, [1, 3]].any()
    assert labels.tolist() == [True, True, True] + [False] * 9


# --- splits -------------------------------------------------------------------------------------------


def random_images(n: int, seed: int = 0) -> tuple[list[str], list[tuple[int, ...]], list[str]]:
    rng = np.random.default_rng(seed)
    combos = [(), (), (3,), (1,), (4,), (3, 4), (2,), (1, 3)]
    weights = np.array([40, 6, 30, 6, 4, 2, 1.5, 0.5])
    picks = rng.choice(len(combos), size=n, p=weights / weights.sum())
    ids = [f"{i:09x}.jpg" for i in range(n)]
    return ids, [combos[p] for p in picks], [hashlib.sha1(i.encode()).hexdigest() for i in ids]


def test_split_is_deterministic_for_a_seed_and_changes_with_it() -> None:
    ids, sets, hashes = random_images(300)
    first = split_images(ids, sets, hashes, PatchSettings(seed=7))
    assert first == split_images(ids, sets, hashes, PatchSettings(seed=7))
    assert first != split_images(ids, sets, hashes, PatchSettings(seed=8))
    assert set(first) == set(ids) and set(first.values()) == {"train", "val", "test"}


def test_split_follows_fractions_within_every_common_class_set() -> None:
    ids, sets, hashes = random_images(2000, seed=1)
    splits = split_images(ids, sets, hashes, PatchSettings(val_fraction=0.2, test_fraction=0.1))
    counts = Counter(splits.values())
    assert counts == {"train": 1400, "val": 400, "test": 200}
    by_set = pd.DataFrame({"classes": [",".join(map(str, s)) for s in sets], "split": [splits[i] for i in ids]})
    shares = pd.crosstab(by_set["classes"], by_set["split"], normalize="index")
    for classes in ["", "3", "1", "4"]:
        assert shares.loc[classes, "val"] == pytest.approx(0.2, abs=0.02)
        assert shares.loc[classes, "test"] == pytest.approx(0.1, abs=0.02)


def test_identical_images_share_a_split() -> None:
    ids, sets, hashes = random_images(200, seed=2)
    hashes = [hashes[i % 50] for i in range(200)]  # four copies of each of 50 images
    sets = [sets[i % 50] for i in range(200)]
    splits = split_images(ids, sets, hashes, PatchSettings())
    for digest in set(hashes):
        assert len({splits[i] for i, h in zip(ids, hashes, strict=True) if h == digest}) == 1


@pytest.mark.parametrize("n", [3, 4, 10])
def test_small_datasets_still_get_val_and_test(n: int) -> None:
    ids, sets, hashes = random_images(n, seed=3)
    assert set(split_images(ids, sets, hashes, PatchSettings()).values()) == {"train", "val", "test"}


def test_rare_class_sets_and_tiny_inputs_work() -> None:
    ids = ["a", "b", "c", "d", "e", "f", "g"]
    sets = [(1, 2, 3), (2, 4), (), (), (), (3,), (3,)]  # every stratum smaller than three
    splits = split_images(ids, sets, ids, PatchSettings())
    assert set(splits) == set(ids) and set(splits.values()) == {"train", "val", "test"}
    assert split_images(["only"], [()], ["h"], PatchSettings()) == {"only": "train"}


# --- patch index --------------------------------------------------------------------------------------


def test_index_of_generated_strips(synthetic_dataset: Path) -> None:
    dataset = Dataset.open(str(synthetic_dataset))
    index = build_patch_index(dataset, PatchSettings(), workers=2)
    assert list(index.columns) == [
        "image_id", "y", "x", "size", "label",
        "px_class_1", "px_class_2", "px_class_3", "px_class_4",
        "classes", "split", "content_hash",
    ]  # fmt: skip
    assert index["label"].dtype == np.int8 and set(index["label"]) <= {0, 1}
    assert len(index) == 12 * len(dataset.image_ids)
    per_image = index.groupby("image_id")
    assert (per_image["split"].nunique() == 1).all()
    assert (per_image.size() == 12).all()
    assert set(index["split"]) == {"train", "val", "test"}
    image_id = index.loc[index["label"] == 1, "image_id"].iloc[0]
    rows = index[index["image_id"] == image_id]
    labels, px = patch_labels(dataset.masks(image_id), list(zip(rows["y"], rows["x"], strict=True)), 256, 32)
    np.testing.assert_array_equal(rows["label"].to_numpy(), labels.astype(np.int8))
    np.testing.assert_array_equal(rows[[f"px_class_{k}" for k in (1, 2, 3, 4)]].to_numpy(), px)
    assert rows["classes"].iloc[0] == ",".join(map(str, dataset.class_set(image_id)))
    assert rows["content_hash"].iloc[0] == pixel_digest(dataset.load_image(image_id))
    assert (index.loc[index["classes"] == "", "label"] == 0).all()


@pytest.fixture
def small_copy(synthetic_dataset_factory, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    """A writable copy of 12 generated 64×160 images."""
    source = synthetic_dataset_factory(12, 0, height=64, width=160, contrast=1.5)
    return Path(shutil.copytree(source, tmp_path / "dataset"))


def test_duplicate_images_land_in_the_same_split(small_copy: Path) -> None:
    images = small_copy / "train_images"
    originals = sorted(images.iterdir())
    for n, original in enumerate(originals):
        shutil.copy(original, images / f"dup0{n:06d}.jpg")
        # The same picture stored differently (PNG bytes of the decoded pixels) is still a duplicate.
        (images / f"dup1{n:06d}.jpg").write_bytes(encode_png(read_image(original)))
    index = build_patch_index(Dataset.open(str(small_copy)), SMALL)
    splits_per_hash = index.groupby("content_hash")["split"].nunique()
    assert len(splits_per_hash) == len(originals) and (splits_per_hash == 1).all()
    assert index.groupby("content_hash")["image_id"].nunique().eq(3).all()


def test_a_corrupt_image_raises_naming_the_file(small_copy: Path) -> None:
    victim = sorted((small_copy / "train_images").iterdir())[3]
    victim.write_bytes(b"not an image")
    with pytest.raises(ImageDecodeError, match=victim.name):
        build_patch_index(Dataset.open(str(small_copy)), SMALL)


def test_an_image_of_the_wrong_size_raises(small_copy: Path) -> None:
    victim = sorted((small_copy / "train_images").iterdir())[0]
    victim.write_bytes(encode_png(np.zeros((64, 161), dtype=np.uint8)))
    with pytest.raises(ImageSizeError, match=victim.name):
        build_patch_index(Dataset.open(str(small_copy)), SMALL)


def test_a_label_row_without_its_image_raises_naming_the_row(small_copy: Path) -> None:
    labels = pd.read_csv(small_copy / "train.csv")
    (small_copy / "train_images" / labels["ImageId"].iloc[0]).unlink()
    with pytest.raises(MissingImageError) as error:
        build_patch_index(Dataset.open(str(small_copy)), SMALL)
    assert error.value.row == 2


def test_index_round_trips_through_parquet(small_copy: Path, tmp_path: Path) -> None:
    index = build_patch_index(Dataset.open(str(small_copy)), SMALL)
    path = write_index(index, tmp_path / "out" / "index.parquet")
    pd.testing.assert_frame_equal(read_index(path), index)


def test_reading_something_else_as_an_index_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(PatchIndexError, match="not found"):
        read_index(tmp_path / "missing.parquet")
    pd.DataFrame({"image_id": ["a"], "x": [0]}).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(PatchIndexError, match="missing columns"):
        read_index(tmp_path / "other.parquet")


def test_cli_writes_the_index(small_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "index.parquet"
    result = CliRunner().invoke(
        app, ["patches", str(small_copy), "--out", str(out), "--set", "patches.size=32", "--set", "patches.stride=16"]
    )
    assert result.exit_code == 0, result.output
    index = read_index(out)
    assert index["size"].eq(32).all() and index["image_id"].nunique() == 12


def test_cli_reports_bad_input_with_exit_code_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["patches", str(tmp_path / "nowhere"), "--out", str(tmp_path / "i.parquet")])
    assert result.exit_code == 2
    assert not (tmp_path / "i.parquet").exists()


def test_ordered_parallel_map_keeps_order_and_cancels_unstarted_work_when_abandoned() -> None:
    calls: list[int] = []
    lock = threading.Lock()

    def slow_square(i: int) -> int:
        with lock:
            calls.append(i)
        time.sleep(0.005 * (i % 3))  # finish out of order
        return i * i

    assert list(ordered_parallel_map(slow_square, range(50), workers=3)) == [i * i for i in range(50)]
    calls.clear()
    results = ordered_parallel_map(slow_square, range(1000), workers=2)
    assert [next(results) for _ in range(3)] == [0, 1, 4]
    results.close()  # a consumer that stops early: queued calls are cancelled, not run for nobody
    assert len(calls) <= 10
