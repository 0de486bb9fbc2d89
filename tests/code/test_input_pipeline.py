"""The tf.data pipeline: batches match the index, training sampling/augmentation, cache, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from steelqc.config import PatchSettings, TrainSettings
from steelqc.data.dataset import Dataset
from steelqc.input_pipeline import patch_dataset
from steelqc.patches import PatchIndexError, build_patch_index, slice_patches

SMALL = PatchSettings(size=32, stride=16)
PLAIN = TrainSettings(augment=False)


@pytest.fixture
def small(synthetic_dataset_factory, tmp_path: Path) -> tuple[Dataset, pd.DataFrame]:  # type: ignore[no-untyped-def]
    """A writable copy of 12 generated 64×160 images (27 patches each) and its index."""
    source = synthetic_dataset_factory(12, 0, height=64, width=160, contrast=1.5)
    dataset = Dataset.open(str(shutil.copytree(source, tmp_path / "dataset")))
    return dataset, build_patch_index(dataset, SMALL)


def collect(data: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in data], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def expected_patches(dataset: Dataset, rows: pd.DataFrame) -> np.ndarray:
    rows = rows[["image_id", "y", "x"]].itertuples(index=False)
    return np.stack([slice_patches(dataset.load_image(i), [(y, x)], 32, "reflect")[0] for i, y, x in rows])


def make(
    dataset: Dataset, index: pd.DataFrame, split: str, training: bool, settings: TrainSettings
) -> tf.data.Dataset:
    return patch_dataset(
        dataset, index, split, batch_size=8, training=training, train_settings=settings, patch_settings=SMALL, workers=2
    )


@pytest.mark.parametrize("split", ["val", "test"])
def test_evaluation_batches_match_the_index_rows(small: tuple[Dataset, pd.DataFrame], split: str) -> None:
    dataset, index = small
    data = make(dataset, index, split, training=False, settings=TrainSettings())  # augment=True must not apply
    x, y = collect(data)
    rows = index[index["split"] == split]
    assert x.dtype == np.float32 and y.dtype == np.float32
    assert x.shape == (len(rows), 32, 32, 1)
    assert data.cardinality().numpy() == -(-len(rows) // 8)
    np.testing.assert_array_equal(x[..., 0], expected_patches(dataset, rows))
    np.testing.assert_array_equal(y, rows["label"].to_numpy(np.float32))


def test_evaluation_keeps_any_row_order_of_the_index(small: tuple[Dataset, pd.DataFrame]) -> None:
    dataset, index = small
    shuffled = index.sample(frac=1.0, random_state=0)  # rows of one image no longer adjacent
    x, y = collect(make(dataset, shuffled, "train", training=False, settings=PLAIN))
    rows = shuffled[shuffled["split"] == "train"]
    np.testing.assert_array_equal(x[..., 0], expected_patches(dataset, rows))
    np.testing.assert_array_equal(y, rows["label"].to_numpy(np.float32))


def test_training_without_augmentation_reads_every_patch_once_shuffled(small: tuple[Dataset, pd.DataFrame]) -> None:
    dataset, index = small
    x, y = collect(make(dataset, index, "train", training=True, settings=PLAIN))
    rows = index[index["split"] == "train"]
    expected = expected_patches(dataset, rows)
    key = lambda patches: sorted(p.tobytes() for p in patches)  # noqa: E731
    assert key(x[..., 0].astype(np.uint8)) == key(expected)
    assert sorted(y) == sorted(rows["label"].to_numpy(np.float32))
    assert not np.array_equal(x[..., 0], expected)  # shuffled


def test_training_augments_with_flips_and_small_brightness_changes(small: tuple[Dataset, pd.DataFrame]) -> None:
    dataset, index = small
    x, _ = collect(make(dataset, index, "train", training=True, settings=TrainSettings(augment=True)))
    originals = {p.tobytes() for p in expected_patches(dataset, index[index["split"] == "train"])}
    changed = [p for p in x[..., 0].astype(np.uint8) if p.tobytes() not in originals]
    assert 0.3 < len(changed) / len(x) < 1.0
    assert x.min() >= 0 and x.max() <= 255


def test_training_is_deterministic_for_a_seed_and_varies_per_epoch(small: tuple[Dataset, pd.DataFrame]) -> None:
    dataset, index = small
    settings = TrainSettings(augment=True, seed=5)
    first = make(dataset, index, "train", training=True, settings=settings)
    epoch1, epoch2 = collect(first), collect(first)
    again = collect(make(dataset, index, "train", training=True, settings=settings))
    np.testing.assert_array_equal(epoch1[0], again[0])
    np.testing.assert_array_equal(epoch1[1], again[1])
    assert not np.array_equal(epoch1[0], epoch2[0])


def test_cap_limits_patches_per_epoch(small: tuple[Dataset, pd.DataFrame]) -> None:
    dataset, index = small
    data = make(dataset, index, "train", training=True, settings=TrainSettings(max_train_patches=20))
    x, _ = collect(data)
    assert len(x) == 20 and data.cardinality().numpy() == 3


def test_balanced_sampling_draws_both_classes_equally(small: tuple[Dataset, pd.DataFrame]) -> None:
    dataset, index = small
    train_rate = index.loc[index["split"] == "train", "label"].mean()
    assert train_rate < 0.35
    settings = TrainSettings(balanced_sampling=True, max_train_patches=600)
    _, y = collect(make(dataset, index, "train", training=True, settings=settings))
    assert len(y) == 600 and y.mean() == pytest.approx(0.5, abs=0.07)


def test_cache_keeps_decoded_images_across_epochs(small: tuple[Dataset, pd.DataFrame]) -> None:
    dataset, index = small
    data = make(dataset, index, "val", training=True, settings=TrainSettings(cache=True))
    first = collect(data)
    shutil.rmtree(Path(dataset.root) / "train_images")
    second = collect(data)
    assert len(first[0]) == len(second[0]) == (index["split"] == "val").sum()


def test_a_corrupt_image_fails_the_iteration_naming_the_file(small: tuple[Dataset, pd.DataFrame]) -> None:
    dataset, index = small
    victim = index.loc[index["split"] == "val", "image_id"].iloc[-1]
    (Path(dataset.root) / "train_images" / victim).write_bytes(b"garbage")
    with pytest.raises(tf.errors.UnknownError, match=f"ImageDecodeError.*{victim}"):
        collect(make(dataset, index, "val", training=False, settings=PLAIN))


def test_empty_split_and_mismatched_patch_size_are_refused(small: tuple[Dataset, pd.DataFrame]) -> None:
    dataset, index = small
    with pytest.raises(ValueError, match="no rows in split 'holdout'"):
        make(dataset, index, "holdout", training=False, settings=PLAIN)
    with pytest.raises(PatchIndexError, match="differs"):
        patch_dataset(
            dataset, index, "val", batch_size=4, training=False, train_settings=PLAIN, patch_settings=PatchSettings()
        )
