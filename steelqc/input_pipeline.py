"""The ``tf.data`` input pipeline: each image decoded once per epoch, its patches sliced in memory.

A per-epoch *plan* says which patch rows of the index to read, grouped by image. Evaluation reads the
split's rows in index order, so scores line up with index rows. Training reads them in a fresh random
image order each epoch, optionally capped (``max_train_patches``) or class-balanced by drawing rows
with weights from the index labels: the index already knows every label, so balancing by sampling
rows decodes only the images it needs, where ``rejection_resample`` / ``sample_from_datasets`` would
decode every image to throw most patches away. Images decode on a thread pool (OpenCV releases the
GIL); a shuffle buffer then mixes patches across images.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import albumentations as A
import numpy as np
import pandas as pd
import tensorflow as tf

from steelqc.config import PatchSettings, TrainSettings
from steelqc.data.dataset import Dataset
from steelqc.model import preprocess_patches
from steelqc.patches import PatchIndexError, ordered_parallel_map, slice_patches

SHUFFLE_BUFFER_PATCHES = 1024  # uint8 256×256 patches: 64 MB, mixes ~85 Severstal strips
BRIGHTNESS_CONTRAST_LIMIT = 0.1  # small: defects are subtle grey-level changes


@dataclass(frozen=True)
class _Chunk:
    """The rows of one image to read in one step of a plan."""

    image_id: str
    rows: np.ndarray  # positions into the split's rows


def _runs_in_order(image_ids: np.ndarray) -> list[_Chunk]:
    """Consecutive rows of the same image as one chunk each, keeping the index's row order exactly."""
    starts = np.concatenate(([0], np.flatnonzero(image_ids[1:] != image_ids[:-1]) + 1))
    bounds = np.append(starts, len(image_ids))
    return [_Chunk(str(image_ids[a]), np.arange(a, b)) for a, b in itertools.pairwise(bounds)]


def training_epoch_size(n_rows: int, settings: TrainSettings) -> int:
    """Patches per training epoch: the cap when set (a balanced draw may exceed the rows), else every row."""
    if settings.max_train_patches is None:
        return n_rows
    return settings.max_train_patches if settings.balanced_sampling else min(settings.max_train_patches, n_rows)


def training_rows(labels: np.ndarray, settings: TrainSettings, rng: np.random.Generator) -> np.ndarray:
    """Row positions one training epoch reads: all, a random capped subset, or a class-balanced draw.

    Balanced sampling draws ``max_train_patches`` (default: as many as there are rows) with replacement,
    each class with equal probability, so rare defective patches are repeated (and augmented differently).
    """
    n = len(labels)
    epoch_size = training_epoch_size(n, settings)
    if settings.balanced_sampling:
        counts = np.bincount(labels.astype(np.int64), minlength=2)
        weights = 1.0 / counts[labels.astype(np.int64)]
        return rng.choice(n, size=epoch_size, replace=True, p=weights / weights.sum())
    if epoch_size < n:
        return rng.choice(n, size=epoch_size, replace=False)
    return np.arange(n)


def _training_plan(image_ids: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> list[_Chunk]:
    """Group the drawn rows by image and visit the images in random order."""
    grouped = pd.Series(rows).groupby(image_ids[rows], sort=True)
    chunks = [_Chunk(str(image_id), np.sort(group.to_numpy())) for image_id, group in grouped]
    return [chunks[i] for i in rng.permutation(len(chunks))]


def augmentation(seed: int) -> A.Compose:
    """Flips and a small brightness/contrast change: no rotation (defects have an orientation), no blur."""
    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomBrightnessContrast(
                brightness_limit=BRIGHTNESS_CONTRAST_LIMIT, contrast_limit=BRIGHTNESS_CONTRAST_LIMIT, p=0.5
            ),
        ],
        seed=seed,
    )


def _chunk_seed(seed: int, epoch: int, chunk_number: int) -> int:
    """An augmentation seed per image and epoch, independent of which thread runs it."""
    return int(np.random.SeedSequence([seed, epoch, chunk_number]).generate_state(1)[0])


class _PatchReader:
    """Decodes images (optionally keeping them in memory) and slices the planned patches."""

    def __init__(self, dataset: Dataset, positions: np.ndarray, patch_settings: PatchSettings, cache: bool) -> None:
        self.dataset = dataset
        self.positions = positions
        self.settings = patch_settings
        self.cache: dict[str, np.ndarray] | None = {} if cache else None

    def image(self, image_id: str) -> np.ndarray:
        if self.cache is None:
            return self.dataset.load_image(image_id)
        if image_id not in self.cache:
            self.cache[image_id] = self.dataset.load_image(image_id)
        return self.cache[image_id]

    def patches(self, chunk: _Chunk) -> np.ndarray:
        positions = [tuple(p) for p in self.positions[chunk.rows]]
        return slice_patches(self.image(chunk.image_id), positions, self.settings.size, self.settings.pad_mode)


def patch_dataset(
    dataset: Dataset,
    index: pd.DataFrame,
    split: str,
    *,
    batch_size: int,
    training: bool,
    train_settings: TrainSettings,
    patch_settings: PatchSettings,
    workers: int = 4,
) -> tf.data.Dataset:
    """Batches ``(x float32 (B,S,S,1) 0–255, y float32 (B,))`` of the patches of ``split``.

    ``training=False``: every row of the split once, in index row order, no augmentation.
    ``training=True``: rows per :func:`training_rows`, shuffled across images, augmented when
    ``train_settings.augment``. ``train_settings.cache`` keeps decoded images in memory across epochs
    (augmentation and sampling stay fresh). A bad image stops iteration with ``tf.errors.UnknownError``
    whose message starts with the data layer's typed error and names the file (TF cannot re-raise the
    Python type); run validation first so this never happens mid-training.
    """
    rows = index[index["split"] == split]
    if rows.empty:
        raise ValueError(f"the patch index has no rows in split {split!r}")
    sizes = set(rows["size"].unique().tolist())
    if sizes != {patch_settings.size}:
        raise PatchIndexError(f"index patch size {sorted(sizes)} differs from patches.size {patch_settings.size}")
    image_ids = rows["image_id"].to_numpy(dtype=str)
    labels = rows["label"].to_numpy(dtype=np.float32)
    reader = _PatchReader(dataset, rows[["y", "x"]].to_numpy(), patch_settings, train_settings.cache)
    augment = training and train_settings.augment
    epochs = itertools.count()

    def plan(epoch: int) -> list[_Chunk]:
        if not training:
            return _runs_in_order(image_ids)
        rng = np.random.default_rng([train_settings.seed, epoch])
        return _training_plan(image_ids, training_rows(labels, train_settings, rng), rng)

    def generate() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        epoch = next(epochs)

        def load(numbered: tuple[int, _Chunk]) -> tuple[np.ndarray, np.ndarray]:
            number, chunk = numbered
            patches = reader.patches(chunk)
            if augment:
                transform = augmentation(_chunk_seed(train_settings.seed, epoch, number))
                patches = np.stack([transform(image=p)["image"] for p in patches])
            return patches, labels[chunk.rows]

        yield from ordered_parallel_map(load, enumerate(plan(epoch)), workers)

    size = patch_settings.size
    patches = tf.data.Dataset.from_generator(
        generate,
        output_signature=(
            tf.TensorSpec((None, size, size), tf.uint8),
            tf.TensorSpec((None,), tf.float32),
        ),
    ).unbatch()
    if training:
        patches = patches.shuffle(SHUFFLE_BUFFER_PATCHES, seed=train_settings.seed, reshuffle_each_iteration=True)
    n_patches = training_epoch_size(len(rows), train_settings) if training else len(rows)
    return (
        patches.batch(batch_size)
        .map(lambda x, y: (preprocess_patches(x), y), num_parallel_calls=tf.data.AUTOTUNE)
        .apply(tf.data.experimental.assert_cardinality(math.ceil(n_patches / batch_size)))
        .prefetch(tf.data.AUTOTUNE)
    )
