"""Patches/s from disk through the input pipeline beside the default model's forward rate, on this machine.

The pipeline (decode + slice + augment + preprocess, training mode) must be at least 5× faster than the
EfficientNetB0@256 forward pass, so it never starves training or inference. Both rates are measured in
the same run, one after the other; on a shared machine the load average is printed beside them.

    .venv/bin/python bench/patches.py [--images 48] [--data DIR] [--workers 4] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from steelqc.config import ModelSettings, PatchSettings, TrainSettings
from steelqc.data.dataset import Dataset
from steelqc.data.synth import generate_dataset
from steelqc.input_pipeline import patch_dataset
from steelqc.patches import build_patch_index

TARGET_RATIO = 5.0


def pipeline_rate(root: str, workers: int, batch_size: int, epochs: int) -> tuple[float, int]:
    """Patches/s of training-mode epochs over every image (first epoch discarded as warm-up)."""
    dataset = Dataset.open(root)
    index = build_patch_index(dataset, PatchSettings(), workers=workers).assign(split="train")
    data = patch_dataset(
        dataset,
        index,
        "train",
        batch_size=batch_size,
        training=True,
        train_settings=TrainSettings(augment=True),
        patch_settings=PatchSettings(),
        workers=workers,
    )
    for _ in data:  # warm-up: tf.data graph tracing, file cache
        pass
    started = time.perf_counter()
    patches = sum(int(x.shape[0]) for _ in range(epochs) for x, _ in data)
    return patches / (time.perf_counter() - started), patches


def model_rate(batch_size: int, batches: int) -> float:
    """Forward patches/s of the default model (EfficientNetB0 at 256 px, random weights)."""
    from steelqc.model import build_model

    model = build_model(ModelSettings(weights="none"), 256)
    x = np.random.default_rng(0).uniform(0, 255, (batch_size, 256, 256, 1)).astype(np.float32)
    model.predict_on_batch(x)  # warm-up: graph tracing
    started = time.perf_counter()
    for _ in range(batches):
        model.predict_on_batch(x)
    return batch_size * batches / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="Dataset folder (default: generate --images strips in a temp folder)")
    parser.add_argument("--images", type=int, default=48, help="Generated strips when --data is not given")
    parser.add_argument("--workers", type=int, default=4, help="Decode threads (data.image_workers)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2, help="Measured pipeline epochs")
    parser.add_argument("--model-batches", type=int, default=4, help="Measured forward batches")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="steelqc-bench-") as tmp:
        root = args.data or str(Path(tmp) / "dataset")
        if not args.data:
            generate_dataset(root, args.images, seed=0)
        load_before = os.getloadavg()[0]
        pipe, n = pipeline_rate(root, args.workers, args.batch_size, args.epochs)
        print(f"pipeline (decode+slice+augment, {args.workers} threads): {pipe:8.1f} patches/s over {n} patches")
    model = model_rate(args.batch_size, args.model_batches)
    print(f"model forward (EfficientNetB0@256, batch {args.batch_size}):  {model:8.1f} patches/s")
    ratio = pipe / model
    verdict = "OK" if ratio >= TARGET_RATIO else "BELOW TARGET"
    print(f"ratio pipeline/model: {ratio:.1f}x (target >= {TARGET_RATIO:.0f}x) {verdict}")
    print(f"load average at start {load_before:.1f}, at end {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
