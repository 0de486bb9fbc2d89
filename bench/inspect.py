"""Strips/s of inspection in both inference modes and on every runtime, against the seed system's loop.

Arms, all timed in one run on the same generated JPEG strips (256×1600; 256-px patches at stride 128, 12 per
strip), alternating within every round so a change in the shared machine's load hits every arm alike:

- (b) the seed system's loop: decode one image, ``model.predict`` its patches, decide; one image at a time;
- (a) the bare forward pass of each runtime × mode on ready tensors (patches: the 12 patches of each strip,
  64 per call; strip: the whole strips, ``--strips-per-call`` per call, feature maps only);
- end to end, ``inspect_batch`` (read + decode on threads → score → decide → CSV/JSON/overlays) per runtime × mode.

Targets (issue 14): strip mode (Keras, end to end) ≥ 2.5 × (b); the best exported runtime's forward ≥ 2.5 × Keras'
forward in the same mode; strip mode on the best runtime end to end ≥ 5 × (b) and ≥ 0.9 × its own (a). Rates are
the best round of ``--rounds`` after a warm-up round (the median beside it); the load average is printed with
them.

What the runtimes can reach is bounded by the CPU's float32 throughput: the run also times a 2048² sgemm in
NumPy and prints the patch mode forward rates as a share of that ceiling (the backbone's multiply-adds per
patch counted from its layers). ``--bf16`` adds OpenVINO computing in bf16, for reference only (exports always
compute in f32), with its largest score difference from Keras; that difference means something only with real
backbone weights (``--weights imagenet``: random weights give near-constant scores).

The model has random weights (speed does not depend on them); thresholds are set so about a fifth of the images
get overlays.

    .venv/bin/python bench/inspect.py [--images 24] [--backbone efficientnet_lite0|small_cnn|efficientnetb0]
        [--runtimes keras,onnx,openvino] [--modes patches,strip] [--workers 2] [--batch-images 8] [--rounds 3]
        [--bf16] [--weights none|imagenet|PATH]
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's folder is first on sys.path and its name shadows the standard library's
# ``inspect`` (which numpy imports); drop the folder before importing anything else.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from steelqc.batch_inspection import inspect_batch  # noqa: E402
from steelqc.config import PATCHES, STRIP, ModelSettings, PatchSettings  # noqa: E402
from steelqc.data.images import encode_jpeg, read_image  # noqa: E402
from steelqc.data.synth import generate_strip  # noqa: E402
from steelqc.inference import Inspector  # noqa: E402
from steelqc.model import BACKBONE_LAYER, build_model, preprocess_patches  # noqa: E402
from steelqc.patches import extract_patches  # noqa: E402
from steelqc.runtimes import KERAS, RUNTIMES, export_runtime, load_runtime  # noqa: E402
from steelqc.strip import StripModel, keras_strip_model, pad_strip, strip_layout  # noqa: E402
from steelqc.thresholds import Thresholds, decide, image_decision  # noqa: E402

TARGET_STRIP_VS_SEED = 2.5
TARGET_RUNTIME_VS_KERAS = 2.5
TARGET_BEST_STRIP_VS_SEED = 5.0
TARGET_VS_FORWARD = 0.9


def alternating_times(rounds: int, runs: Sequence[Callable[[], object]]) -> list[list[float]]:
    """Seconds of each run in each counted round; every round calls every run once, in turn, after one
    uncounted warm-up round (graph tracing, compilation)."""
    times: list[list[float]] = [[] for _ in runs]
    for counted in [False] + [True] * rounds:
        for i, run in enumerate(runs):
            started = time.perf_counter()
            run()
            if counted:
                times[i].append(time.perf_counter() - started)
        print(f"  round done, load average {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    return times


def multiply_adds_per_patch(model: object) -> int:
    """Multiply-adds of one patch through the model's convolutions and dense layers (the rest is negligible)."""
    import keras

    total = 0
    for layer in model.get_layer(BACKBONE_LAYER).layers + model.layers:  # type: ignore[attr-defined]
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            total += int(np.prod(layer.output.shape[1:])) * int(np.prod(layer.kernel_size))
        elif isinstance(layer, keras.layers.Conv2D):
            total += int(np.prod(layer.output.shape[1:])) * int(np.prod(layer.kernel_size)) * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            total += int(layer.input.shape[-1]) * layer.units
    return total


def sgemm_multiply_adds_per_second(size: int = 2048, repeats: int = 8) -> float:
    """The CPU's float32 ceiling as NumPy's BLAS reaches it: multiply-adds/s of a ``size``² matrix product."""
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    a @ a
    started = time.perf_counter()
    for _ in range(repeats):
        a @ a
    return size**3 * repeats / (time.perf_counter() - started)


def openvino_bf16(model: object, folder: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The patch model on OpenVINO computing in bf16 (the CPU plugin's default where the CPU has it): scores."""
    import openvino as ov

    exported = export_runtime(model, "openvino", folder)
    compiled = ov.Core().compile_model(exported / "model.xml", "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    return lambda x: np.asarray(compiled(x)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument(
        "--backbone", choices=["small_cnn", "efficientnet_lite0", "efficientnetb0"], default="efficientnet_lite0"
    )
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated, keras first (the baseline)")
    parser.add_argument("--modes", default=f"{PATCHES},{STRIP}")
    parser.add_argument("--input-size", type=int, default=None, help="default: the patch size (256)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64, help="patches per model call (patch mode)")
    parser.add_argument("--strips-per-call", type=int, default=4, help="strips per backbone call (strip mode)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="also time OpenVINO in bf16 (reference, never exported)")
    parser.add_argument("--weights", default="none", help="backbone weights: none (speed alone), imagenet or a file")
    args = parser.parse_args()
    runtimes = [name.strip() for name in args.runtimes.split(",")]
    modes = [mode.strip() for mode in args.modes.split(",")]
    if runtimes[0] != KERAS or not set(runtimes) <= set(RUNTIMES):
        parser.error(f"--runtimes: keras first, then any of {', '.join(RUNTIMES[1:])}")
    if not set(modes) <= {PATCHES, STRIP}:
        parser.error("--modes: patches and/or strip")
    load_before = os.getloadavg()

    patch = PatchSettings()
    input_size = args.input_size or patch.size
    model = build_model(ModelSettings(backbone=args.backbone, weights=args.weights, input_size=input_size), patch.size)

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
        patch_tensors = preprocess_patches(patches)

        scores = np.concatenate([np.asarray(model.predict_on_batch(patch_tensors[i : i + 256])).ravel()
                                 for i in range(0, len(patch_tensors), 256)])  # fmt: skip
        thresholds = Thresholds(float(np.quantile(scores, 0.98)), float(np.quantile(scores, 0.995)),
                                1.0, 1.0, 1.0, 0.5, 1, 1, True, "bench")  # fmt: skip

        scorers: dict[tuple[str, str], object] = {}
        for mode in modes:
            scorers[(KERAS, mode)] = model if mode == PATCHES else keras_strip_model(model)
            for name in runtimes[1:]:
                exported = export_runtime(model, name, Path(tmp) / f"{name}-{mode}", mode=mode)
                scorers[(name, mode)] = load_runtime(exported)
        cell = next((s.cell for s in scorers.values() if isinstance(s, StripModel)), 32)
        layout = strip_layout(*pixels[0].shape, patch.size, patch.stride, cell)
        strip_tensors = preprocess_patches(np.stack([pad_strip(p, layout.padded, patch.pad_mode) for p in pixels]))

        def forward(runtime: str, mode: str) -> Callable[[], None]:  # (a): the network alone on ready tensors
            scorer = scorers[(runtime, mode)]
            if mode == STRIP:
                assert isinstance(scorer, StripModel)
                step, tensors, call = args.strips_per_call, strip_tensors, scorer.feature_maps
            else:
                step, tensors, call = args.batch_size, patch_tensors, scorer.predict_on_batch  # type: ignore[attr-defined]

            def run() -> None:
                for start in range(0, len(tensors), step):
                    call(tensors[start : start + step])

            return run

        def seed_loop() -> None:  # (b) decode, patch and predict one image at a time
            for path in files:
                image_patches = extract_patches(read_image(path), patch.size, patch.stride, patch.pad_mode)[0]
                image_scores = model.predict(preprocess_patches(image_patches), verbose=0).ravel()
                image_decision(decide(image_scores, thresholds))

        def end_to_end(runtime: str, mode: str) -> Callable[[], None]:
            inspector = Inspector(scorers[(runtime, mode)], thresholds, patch.size, patch.stride, patch.pad_mode,  # type: ignore[arg-type]
                                  batch_size=args.batch_size, mode=mode, strips_per_call=args.strips_per_call)  # type: ignore[arg-type]  # fmt: skip
            return lambda: inspect_batch(inspector, folder, Path(tmp) / "out", workers=args.workers,
                                         batch_images=args.batch_images)  # fmt: skip

        arms = [(r, m) for m in modes for r in runtimes]
        rows: list[tuple[str, Callable[[], object], tuple[str, str] | None]] = [
            ("(b) seed loop, one image at a time", seed_loop, None),
            *((f"(a) forward, {m}, {r}", forward(r, m), None) for r, m in arms),
            *((f"    end to end, {m}, {r}", end_to_end(r, m), (r, m)) for r, m in arms),
        ]
        bf16_diff = None
        if args.bf16:
            bf16 = openvino_bf16(model, Path(tmp) / "openvino-bf16")
            bf16_scores = [bf16(patch_tensors[i : i + 256]).ravel() for i in range(0, len(patch_tensors), 256)]
            bf16_diff = float(np.max(np.abs(np.concatenate(bf16_scores) - scores)))
            bf16_calls = range(0, len(patch_tensors), args.batch_size)
            rows.append(("(a) forward, patches, openvino bf16",
                         lambda: [bf16(patch_tensors[i : i + args.batch_size]) for i in bf16_calls], None))  # fmt: skip
        times = alternating_times(args.rounds, [run for _, run, _ in rows])
        ceiling = sgemm_multiply_adds_per_second() / multiply_adds_per_patch(model)

    best = [args.images / min(t) for t in times]
    median = [args.images / statistics.median(t) for t in times]
    loads = f"{'/'.join(f'{x:.1f}' for x in load_before)} before, {'/'.join(f'{x:.1f}' for x in os.getloadavg())} after"
    print(f"{args.backbone}@{input_size} ({args.weights} weights), {args.images} strips 256x1600 x "
          f"{len(patches) // args.images} patches, "
          f"{args.rounds} alternating rounds + warm-up, patch batch {args.batch_size}, {args.strips_per_call} strips "
          f"per strip-mode call, {args.workers} decode threads; load average (1/5/15 min) "
          f"{loads}")  # fmt: skip
    forward_rate = {arm: best[1 + i] for i, arm in enumerate(arms)}
    seed = best[0]
    print(f"{'':36}{'strips/s':>9}{'median':>8}{'/ (b) seed':>12}{'/ own (a)':>11}")
    for (label, _, arm), rate, med in zip(rows, best, median, strict=True):
        own = f"{rate / forward_rate[arm]:10.2f}x" if arm else ""
        print(f"{label:36}{rate:9.2f}{med:8.2f}{rate / seed:11.2f}x{own}")

    def verdict(value: float, target: float) -> str:
        return f"{value:.2f} (target >= {target}): {'met' if value >= target else f'MISSED by {target - value:.2f}'}"

    patches_per_strip = len(patches) // args.images
    print(f"float32 ceiling: {ceiling:.0f} patches/s = {ceiling / patches_per_strip:.2f} strips/s in patch mode "
          "(2048² sgemm in NumPy, same run, over the counted multiply-adds per patch)")  # fmt: skip
    if PATCHES in modes:
        for r in runtimes:
            print(f"  patches, {r}: {forward_rate[(r, PATCHES)] * patches_per_strip / ceiling:.0%} of the ceiling")
        needed = TARGET_RUNTIME_VS_KERAS * forward_rate[(KERAS, PATCHES)] * patches_per_strip
        print(f"  {TARGET_RUNTIME_VS_KERAS} x keras' forward: {needed:.0f} patches/s = {needed / ceiling:.0%} of it")
    if bf16_diff is not None:
        rate = best[-1]
        print(
            f"openvino bf16 (reference, not an export): {rate:.2f} strips/s = "
            f"{rate / forward_rate[(KERAS, PATCHES)]:.2f}x keras' forward; max |score - keras| {bf16_diff:.1e}"
        )
    e2e = {arm: best[1 + len(arms) + i] for i, arm in enumerate(arms)}
    if STRIP in modes:
        print(f"strip mode, keras, end to end / (b) = {verdict(e2e[(KERAS, STRIP)] / seed, TARGET_STRIP_VS_SEED)}")
    for mode in modes:
        if len(runtimes) > 1:
            fastest = max(runtimes[1:], key=lambda r: forward_rate[(r, mode)])
            ratio = forward_rate[(fastest, mode)] / forward_rate[(KERAS, mode)]
            print(f"{mode}: best runtime {fastest}: (a) / keras (a) = {verdict(ratio, TARGET_RUNTIME_VS_KERAS)}")
    if STRIP in modes:
        fastest = max(runtimes, key=lambda r: e2e[(r, STRIP)])
        print(f"strip mode on {fastest}, end to end / (b) = "
              f"{verdict(e2e[(fastest, STRIP)] / seed, TARGET_BEST_STRIP_VS_SEED)}; end to end / own (a) = "
              f"{verdict(e2e[(fastest, STRIP)] / forward_rate[(fastest, STRIP)], TARGET_VS_FORWARD)}")  # fmt: skip


if __name__ == "__main__":
    main()
