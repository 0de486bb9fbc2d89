"""Decode + encode of 7,095 Severstal-sized masks with steelqc's numpy RLE, beside a plain-Python loop.

Mask counts per class are the real ones (897 / 247 / 5,150 / 801) and their shapes follow the real
classes: class 1 tiny pits, class 2 short vertical marks, class 3 long areas, class 4 large patches.
Target: all 7,095 decoded and re-encoded in under 1 s. The plain-Python loop takes minutes for all of
them, so by default it runs on a stratified sample and its time is scaled to 7,095 (``--baseline-all``
times it on everything). Both implementations must produce identical strings.

    .venv/bin/python bench/rle.py [--seed 0] [--baseline-sample 300] [--baseline-all]
"""

from __future__ import annotations

import argparse
import os
import time

import cv2
import numpy as np

from steelqc.data.rle import decode_rle, encode_rle

HEIGHT, WIDTH = 256, 1600
MASKS_PER_CLASS = {1: 897, 2: 247, 3: 5150, 4: 801}
TARGET_SECONDS = 1.0


def realistic_mask(rng: np.random.Generator, class_id: int) -> np.ndarray:
    """A mask shaped and sized like the real class (areas from tens to tens of thousands of pixels)."""
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    x, y = int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT))
    if class_id == 1:
        for _ in range(int(rng.integers(1, 6))):
            axes = (int(rng.integers(2, 20)), int(rng.integers(2, 16)))
            cv2.ellipse(mask, (x + int(rng.integers(-40, 40)), y), axes, 0, 0, 360, 1, -1)
    elif class_id == 2:
        for _ in range(int(rng.integers(1, 5))):
            x0 = x + int(rng.integers(-30, 30))
            cv2.rectangle(mask, (x0, y), (x0 + int(rng.integers(2, 10)), y + int(rng.integers(20, 120))), 1, -1)
    elif class_id == 3:
        length, thickness = rng.lognormal(5.5, 0.7), rng.lognormal(3.0, 0.6)
        angle = float(rng.uniform(-30, 30) + (90 if rng.random() < 0.4 else 0))
        cv2.ellipse(mask, (x, y), (int(min(length, 1600)), int(min(thickness, 128))), angle, 0, 360, 1, -1)
    else:
        axes = (int(rng.uniform(60, 400)), int(rng.uniform(40, 256)))
        cv2.ellipse(mask, (x, y), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    if not mask.any():
        mask[y, x] = 1
    return mask.astype(bool)


def loop_decode(encoded: str, height: int, width: int) -> list[list[int]]:
    """The plain-Python way: one pixel at a time into a column-major list, then rows of a grid."""
    values = [int(v) for v in encoded.split()]
    flat = [0] * (height * width)
    for start, length in zip(values[0::2], values[1::2], strict=True):
        for i in range(start - 1, start - 1 + length):
            flat[i] = 1
    return [[flat[x * height + y] for x in range(width)] for y in range(height)]


def loop_encode(grid: list[list[int]]) -> str:
    """The plain-Python way: walk the columns top to bottom, emitting a pair at each run's end."""
    height, width = len(grid), len(grid[0])
    pairs: list[int] = []
    run_start, index = -1, 0
    for x in range(width):
        for y in range(height):
            index += 1
            if grid[y][x]:
                if run_start < 0:
                    run_start = index
            elif run_start >= 0:
                pairs += [run_start, index - run_start]
                run_start = -1
    if run_start >= 0:
        pairs += [run_start, index + 1 - run_start]
    return " ".join(map(str, pairs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline-sample", type=int, default=300, help="masks the plain-Python loop runs on")
    parser.add_argument("--baseline-all", action="store_true", help="run the loop on all 7,095 (minutes)")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    classes = [c for c, n in MASKS_PER_CLASS.items() for _ in range(n)]
    strings = [encode_rle(realistic_mask(rng, c)) for c in classes]
    areas = np.array([sum(map(int, s.split()[1::2])) for s in strings])
    runs = np.array([len(s.split()) // 2 for s in strings])
    print(f"{len(strings)} masks; area px median {np.median(areas):.0f}, max {areas.max()}; "
          f"runs per mask median {np.median(runs):.0f}, max {runs.max()}")

    started, cpu_started = time.perf_counter(), time.process_time()
    fast = [encode_rle(decode_rle(s, HEIGHT, WIDTH)) for s in strings]
    fast_seconds, fast_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    assert fast == strings, "numpy RLE round trip changed a mask"

    if args.baseline_all:
        sample = list(range(len(strings)))
    else:
        sample = sorted(rng.choice(len(strings), size=min(args.baseline_sample, len(strings)), replace=False).tolist())
    started, cpu_started = time.perf_counter(), time.process_time()
    slow = [loop_encode(loop_decode(strings[i], HEIGHT, WIDTH)) for i in sample]
    scale = len(strings) / len(sample)
    loop_seconds = (time.perf_counter() - started) * scale
    loop_cpu = (time.process_time() - cpu_started) * scale
    assert slow == [strings[i] for i in sample], "plain-Python loop disagrees with numpy RLE"

    scaled = "" if len(sample) == len(strings) else f" (measured on {len(sample)} masks, scaled to {len(strings)})"
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"numpy decode+encode:  {fast_seconds:8.3f} s wall, {fast_cpu:8.3f} s CPU for {len(strings)} masks")
    print(f"plain-Python loop:    {loop_seconds:8.3f} s wall, {loop_cpu:8.3f} s CPU{scaled}")
    print(f"speed-up:             {loop_seconds / fast_seconds:8.1f}x wall, {loop_cpu / fast_cpu:8.1f}x CPU")
    # On a shared machine wall time includes waiting for a core; CPU time is what the code costs.
    verdict = "OK" if fast_cpu < TARGET_SECONDS else "MISSED"
    print(f"target < {TARGET_SECONDS:.0f} s (CPU) for all {len(strings)}: {verdict}")
    if fast_cpu >= TARGET_SECONDS:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
