"""Images/s of batch inspection end to end (read + decode → patches → model → decisions → CSV/JSON/overlays)
beside (a) the bare batched forward pass of the same model on pre-made patch tensors and (b) the seed
system's loop, which decodes an image and calls ``model.predict`` on its patches, one image at a time.

Targets: end to end ≥ 0.9 × (a) and ≥ 1.5 × (b). All rates come from the same run on the same generated
JPEG strips (256×1600, 256 px patches at stride 128: 12 per image), best of ``--repeats`` after a
warm-up; the load average is printed beside them because the machine is shared. The model has random
weights (speed does not depend on them); thresholds are set so about a fifth of images get overlays.

    .venv/bin/python bench/inspect.py [--images 48] [--backbone small_cnn|efficientnet_lite0|efficientnetb0]
                                      [--input-size N] [--workers 2] [--batch-images 8] [--repeats 2] [--with-log]
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's folder is first on sys.path and its name shadows the standard library's
# ``inspect`` (which numpy imports); drop the folder before importing anything else.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from steelqc.batch_inspection import inspect_batch  # noqa: E402
from steelqc.config import ModelSettings, PatchSettings  # noqa: E402
from steelqc.data.images import encode_jpeg, read_image  # noqa: E402
from steelqc.data.synth import generate_strip  # noqa: E402
from steelqc.inference import Inspector  # noqa: E402
from steelqc.model import build_model, preprocess_patches  # noqa: E402
from steelqc.monitoring import PatchLog, build_reference  # noqa: E402
from steelqc.patches import extract_patches  # noqa: E402
from steelqc.thresholds import Thresholds, decide, image_decision  # noqa: E402

TARGET_VS_FORWARD = 0.9
TARGET_VS_SEED_LOOP = 1.5


def best_rate(images: int, repeats: int, run: Callable[[], object]) -> float:
    """Images/s of the fastest of ``repeats`` runs."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return images / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument(
        "--backbone", choices=["small_cnn", "efficientnet_lite0", "efficientnetb0"], default="small_cnn"
    )
    parser.add_argument("--input-size", type=int, default=None, help="default: 128 small_cnn, 256 EfficientNets")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64, help="patches per model call")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--with-log", action="store_true", help="also time inspection with the patch log")
    args = parser.parse_args()

    patch = PatchSettings()
    input_size = args.input_size or (128 if args.backbone == "small_cnn" else 256)
    model = build_model(ModelSettings(backbone=args.backbone, weights="none", input_size=input_size), patch.size)

    with tempfile.TemporaryDirectory(prefix="steelqc-bench-inspect-") as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.images):
            classes = (1 + i % 4,) if i % 2 else ()
            (folder / f"strip{i:03d}.jpg").write_bytes(encode_jpeg(generate_strip(rng, defective_classes=classes)[0]))
        files = sorted(folder.iterdir())
        pixels = [read_image(p) for p in files]
        patches = np.concatenate([extract_patches(p, patch.size, patch.stride, patch.pad_mode)[0] for p in pixels])
        tensors = preprocess_patches(patches)

        def forward() -> None:  # (a) the model alone on ready tensors, same batch size
            for start in range(0, len(tensors), args.batch_size):
                model.predict_on_batch(tensors[start : start + args.batch_size])

        scores = np.concatenate([np.asarray(model.predict_on_batch(tensors[i : i + 256])).ravel()
                                 for i in range(0, len(tensors), 256)])  # fmt: skip
        t_pass = float(np.quantile(scores, 0.98))
        thresholds = Thresholds(t_pass, float(np.quantile(scores, 0.995)), 1.0, 1.0, 1.0, 0.5, 1, 1, True, "bench")
        inspector = Inspector(model, thresholds, patch.size, patch.stride, patch.pad_mode, batch_size=args.batch_size)

        def seed_loop() -> None:  # (b) decode, patch and predict one image at a time
            for path in files:
                image_patches = extract_patches(read_image(path), patch.size, patch.stride, patch.pad_mode)[0]
                image_scores = model.predict(preprocess_patches(image_patches), verbose=0).ravel()
                image_decision(decide(image_scores, thresholds))

        def end_to_end() -> None:
            inspect_batch(inspector, folder, Path(tmp) / "out", workers=args.workers, batch_images=args.batch_images)

        _, reducer = build_reference(model, patches[:64])

        def end_to_end_logged() -> None:
            inspect_batch(inspector, folder, Path(tmp) / "out-log", workers=args.workers,
                          batch_images=args.batch_images, patch_log=PatchLog(Path(tmp) / "log"),
                          reducer=reducer)  # fmt: skip

        for warm_up in (forward, seed_loop, end_to_end) + ((end_to_end_logged,) if args.with_log else ()):
            warm_up()
        rate_forward = best_rate(args.images, args.repeats, forward)
        rate_seed = best_rate(args.images, args.repeats, seed_loop)
        rate_e2e = best_rate(args.images, args.repeats, end_to_end)
        rate_logged = best_rate(args.images, args.repeats, end_to_end_logged) if args.with_log else None

    load = os.getloadavg()[0]
    print(f"{args.backbone}@{input_size}, {args.images} images x {len(patches) // args.images} patches, "
          f"batch {args.batch_size}, {args.workers} decode threads, load average {load:.1f}")  # fmt: skip
    print(f"(a) bare batched forward pass      {rate_forward:7.2f} images/s")
    print(f"(b) seed loop, one image at a time {rate_seed:7.2f} images/s")
    print(f"    inspect_batch end to end       {rate_e2e:7.2f} images/s")
    if rate_logged is not None:
        print(f"    ... with the patch log         {rate_logged:7.2f} images/s")
    vs_forward, vs_seed = rate_e2e / rate_forward, rate_e2e / rate_seed
    print(f"end to end / (a) = {vs_forward:.2f} (target >= {TARGET_VS_FORWARD}): "
          f"{'met' if vs_forward >= TARGET_VS_FORWARD else 'MISSED'}")  # fmt: skip
    print(f"end to end / (b) = {vs_seed:.2f} (target >= {TARGET_VS_SEED_LOOP}): "
          f"{'met' if vs_seed >= TARGET_VS_SEED_LOOP else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
