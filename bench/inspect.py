"""Strips/s of batch inspection end to end (read + decode → patches → model → decisions → CSV/JSON/overlays)
beside (a) the bare batched forward pass of the same model on pre-made patch tensors and (b) the seed
system's loop, which decodes an image and calls ``model.predict`` on its patches, one image at a time —
for the Keras model and for each exported runtime (``steelqc.runtimes``: OpenVINO, ONNX Runtime) of it.

Targets: end to end ≥ 0.9 × its runtime's (a) and ≥ 1.5 × (b); the best runtime's forward ≥ 2.5 × Keras'
(issue 14). All rates come from the same run on the same generated JPEG strips (256×1600, 256 px patches at
stride 128: 12 per image), best of ``--repeats`` alternating rounds after a warm-up round; the load average
is printed beside them because the machine is shared. The model has random weights (speed does not depend on
them); thresholds are set so about a fifth of images get overlays.

    .venv/bin/python bench/inspect.py [--images 24] [--backbone efficientnet_lite0|small_cnn|efficientnetb0]
        [--input-size N] [--runtimes keras,openvino,onnx] [--workers 2] [--batch-images 8] [--repeats 2]
        [--with-log]
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
from collections.abc import Callable, Sequence  # noqa: E402
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
from steelqc.runtimes import KERAS, RUNTIMES, export_runtime, load_runtime  # noqa: E402
from steelqc.thresholds import Thresholds, decide, image_decision  # noqa: E402

TARGET_VS_FORWARD = 0.9
TARGET_VS_SEED_LOOP = 1.5
TARGET_RUNTIME_VS_KERAS = 2.5


def alternating_rates(images: int, rounds: int, runs: Sequence[Callable[[], object]]) -> list[float]:
    """Images/s of each run, the best of ``rounds`` rounds that call every run once in turn.

    An extra first round warms up (graph tracing, compilation) and is not counted; alternating means a
    change in the shared machine's load hits every run alike instead of whichever was timed then.
    """
    best = [float("inf")] * len(runs)
    for counted in [False] + [True] * rounds:
        for i, run in enumerate(runs):
            started = time.perf_counter()
            run()
            if counted:
                best[i] = min(best[i], time.perf_counter() - started)
    return [images / seconds for seconds in best]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument(
        "--backbone", choices=["small_cnn", "efficientnet_lite0", "efficientnetb0"], default="efficientnet_lite0"
    )
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated, keras first (the baseline)")
    parser.add_argument("--input-size", type=int, default=None, help="default: 128 small_cnn, 256 EfficientNets")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64, help="patches per model call")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--with-log", action="store_true", help="also time inspection with the patch log")
    args = parser.parse_args()
    runtimes = [name.strip() for name in args.runtimes.split(",")]
    if runtimes[0] != KERAS or not set(runtimes) <= set(RUNTIMES):
        parser.error(f"--runtimes: keras first, then any of {', '.join(RUNTIMES[1:])}")
    load_before = os.getloadavg()[0]

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

        scorers = {
            KERAS: model,
            **{name: load_runtime(export_runtime(model, name, Path(tmp) / name)) for name in runtimes[1:]},
        }

        def forward(scorer: object) -> Callable[[], None]:  # (a) the model alone on ready tensors, same batch size
            def run() -> None:
                for start in range(0, len(tensors), args.batch_size):
                    scorer.predict_on_batch(tensors[start : start + args.batch_size])  # type: ignore[attr-defined]

            return run

        scores = np.concatenate([np.asarray(model.predict_on_batch(tensors[i : i + 256])).ravel()
                                 for i in range(0, len(tensors), 256)])  # fmt: skip
        t_pass = float(np.quantile(scores, 0.98))
        thresholds = Thresholds(t_pass, float(np.quantile(scores, 0.995)), 1.0, 1.0, 1.0, 0.5, 1, 1, True, "bench")
        inspectors = {
            name: Inspector(scorer, thresholds, patch.size, patch.stride, patch.pad_mode, batch_size=args.batch_size)
            for name, scorer in scorers.items()
        }

        def seed_loop() -> None:  # (b) decode, patch and predict one image at a time
            for path in files:
                image_patches = extract_patches(read_image(path), patch.size, patch.stride, patch.pad_mode)[0]
                image_scores = model.predict(preprocess_patches(image_patches), verbose=0).ravel()
                image_decision(decide(image_scores, thresholds))

        def end_to_end(name: str) -> Callable[[], None]:
            return lambda: inspect_batch(inspectors[name], folder, Path(tmp) / "out", workers=args.workers,
                                         batch_images=args.batch_images)  # fmt: skip

        _, reducer = build_reference(model, patches[:64])

        def end_to_end_logged() -> None:
            inspect_batch(
                inspectors[KERAS], folder, Path(tmp) / "out-log", workers=args.workers,
                batch_images=args.batch_images, patch_log=PatchLog(Path(tmp) / "log"), reducer=reducer,
            )  # fmt: skip

        rows: list[tuple[str, Callable[[], object], str | None]] = [  # label, run, runtime whose forward it follows
            *((f"(a) bare batched forward, {n}", forward(scorers[n]), None) for n in runtimes),
            ("(b) seed loop, one image at a time", seed_loop, None),
            *((f"    inspect_batch end to end, {n}", end_to_end(n), n) for n in runtimes),
        ]
        if args.with_log:
            rows.append(("    ... keras with the patch log", end_to_end_logged, KERAS))
        rates = alternating_rates(args.images, args.repeats, [run for _, run, _ in rows])

    print(f"{args.backbone}@{input_size}, {args.images} strips x {len(patches) // args.images} patches, "
          f"batch {args.batch_size}, {args.workers} decode threads, load average {load_before:.1f} before / "
          f"{os.getloadavg()[0]:.1f} after")  # fmt: skip
    forward_rate = dict(zip(runtimes, rates, strict=False))
    seed = rates[len(runtimes)]
    print(f"{'':40}{'strips/s':>9}{'/ (b) seed':>12}{'/ keras (a)':>13}{'/ own (a)':>11}")
    for (label, _, runtime), rate in zip(rows, rates, strict=True):
        own = f"{rate / forward_rate[runtime]:10.2f}x" if runtime else ""
        print(f"{label:40}{rate:9.2f}{rate / seed:11.2f}x{rate / forward_rate[KERAS]:12.2f}x{own}")
    for n in runtimes:
        e2e = rates[len(runtimes) + 1 + runtimes.index(n)]
        vs_forward, vs_seed = e2e / forward_rate[n], e2e / seed
        print(f"{n}: end to end / own (a) = {vs_forward:.2f} (target >= {TARGET_VS_FORWARD}): "
              f"{'met' if vs_forward >= TARGET_VS_FORWARD else 'MISSED'}; end to end / (b) = {vs_seed:.2f} "
              f"(target >= {TARGET_VS_SEED_LOOP}): "
              f"{'met' if vs_seed >= TARGET_VS_SEED_LOOP else 'MISSED'}")  # fmt: skip
    if len(runtimes) > 1:
        best = max(runtimes[1:], key=forward_rate.__getitem__)
        ratio = forward_rate[best] / forward_rate[KERAS]
        print(f"best runtime {best}: (a) / keras (a) = {ratio:.2f} (target >= {TARGET_RUNTIME_VS_KERAS}): "
              f"{'met' if ratio >= TARGET_RUNTIME_VS_KERAS else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
