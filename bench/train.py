"""Training patches/s through the real input pipeline beside a bare ``model.fit`` on in-memory arrays.

Same model (the demo profile's small CNN), same batch size, same number of patches per epoch. The
pipeline side decodes, slices, augments and preprocesses from disk every epoch; the baseline gets the
same patches already decoded and preprocessed in memory. Target: pipeline / in-memory ≥ 0.85, i.e. the
input pipeline costs training at most 15%. Epochs of the two sides alternate so both see the same load on
the shared cores; the first epoch of each (graph tracing) is not timed, the best remaining epoch counts,
and the load average is printed beside the rates.

    .venv/bin/python bench/train.py [--images 60] [--epochs 4] [--data DIR] [--config demo] [--cache]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import steelqc  # noqa: F401  first: keeps Keras' home in the state folder (not $HOME) before keras loads

# isort: split

import keras
import numpy as np

from steelqc.config import Settings, load_settings
from steelqc.data.dataset import Dataset
from steelqc.data.synth import generate_dataset
from steelqc.input_pipeline import patch_dataset
from steelqc.model import build_model, preprocess_patches
from steelqc.patches import build_patch_index, slice_patches
from steelqc.training import compute_class_weights

TARGET_RATIO = 0.85


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self.started)


def _compiled_model(settings: Settings) -> keras.Model:
    keras.utils.set_random_seed(settings.train.seed)
    model = build_model(settings.model, settings.patches.size)
    model.compile(optimizer=keras.optimizers.Adam(settings.train.learning_rate), loss="binary_crossentropy",
                  metrics=[keras.metrics.AUC(curve="PR", name="pr_auc")])
    return model


def _epoch_seconds(model: keras.Model, fit_args: dict, weights: dict[int, float]) -> float:
    timer = _EpochTimer()
    model.fit(**fit_args, epochs=1, class_weight=weights, callbacks=[timer], verbose=0)
    return timer.seconds[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="Dataset folder (default: generate --images strips in a temp folder)")
    parser.add_argument("--images", type=int, default=60, help="Generated 256×1600 strips when --data is not given")
    parser.add_argument("--epochs", type=int, default=4, help="Epochs per side; the first is not timed")
    parser.add_argument("--config", default="demo", help="Profile whose model/patch/train settings are used")
    parser.add_argument("--cache", action="store_true", help="train.cache: keep decoded images in memory")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is warm-up)")
    settings = load_settings(
        args.config, {"train.max_train_patches": None, "train.balanced_sampling": False, "train.cache": args.cache}
    )

    with tempfile.TemporaryDirectory(prefix="steelqc-bench-") as tmp:
        root = args.data or str(Path(tmp) / "dataset")
        if not args.data:
            generate_dataset(root, args.images, seed=0, contrast=settings.synth.contrast)
        dataset = Dataset.open(root)
        index = build_patch_index(dataset, settings.patches, workers=settings.data.image_workers)
        rows = index[index.split == "train"]
        weights = compute_class_weights(rows["label"])
        load_before = os.getloadavg()[0]

        pipeline = patch_dataset(dataset, index, "train", batch_size=settings.train.batch_size, training=True,
                                 train_settings=settings.train, patch_settings=settings.patches,
                                 workers=settings.data.image_workers)
        p = settings.patches
        groups = list(rows.groupby("image_id", sort=False))
        patches = np.concatenate([
            slice_patches(dataset.load_image(image_id), list(zip(group.y, group.x, strict=True)), p.size, p.pad_mode)
            for image_id, group in groups
        ])
        in_memory = {"x": preprocess_patches(patches), "y": np.concatenate([g["label"].to_numpy(np.float32)
                                                                           for _, g in groups]),
                     "batch_size": settings.train.batch_size}
        sides = {"pipeline": (_compiled_model(settings), {"x": pipeline}),
                 "in_memory": (_compiled_model(settings), in_memory)}
        seconds: dict[str, list[float]] = {name: [] for name in sides}
        for round_number in range(args.epochs):  # alternate, so both sides see the same load; round 0 warms up
            for name, (model, fit_args) in sides.items():
                elapsed = _epoch_seconds(model, fit_args, weights)
                if round_number:
                    seconds[name].append(elapsed)
        piped, bare = (len(rows) / min(seconds[name]) for name in ("pipeline", "in_memory"))

    augment = "augmented" if settings.train.augment else "not augmented"
    cached = ", decoded images cached" if settings.train.cache else ""
    print(f"{len(rows)} training patches of {p.size} px, {settings.model.backbone}@{settings.model.input_size}, "
          f"batch {settings.train.batch_size}, best of {args.epochs - 1} alternating epochs each{cached}")
    print(f"real pipeline (decode+slice+{augment}, {settings.data.image_workers} threads): {piped:7.1f} patches/s")
    print(f"bare model.fit on in-memory arrays:                            {bare:7.1f} patches/s")
    ratio = piped / bare
    verdict = "OK" if ratio >= TARGET_RATIO else "BELOW TARGET"
    print(f"ratio pipeline/in-memory: {ratio:.2f} (target >= {TARGET_RATIO}) {verdict}")
    print(f"load average at start {load_before:.1f}, at end {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
