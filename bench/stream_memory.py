"""Does batch inspection's memory stay bounded as the stream grows? Python-heap peak for N and 8N images.

``inspect_batch`` runs twice in one process on a folder of N, then 8N, generated strips (hard links to 16
distinct PNGs, so disk and generation cost stay small; a symlink out of the folder is refused as a path
trick), with the patch log and its embeddings on: the path that holds the most per image. ``tracemalloc``
records the peak of Python and NumPy allocations during each run (TensorFlow's own C++ buffers are outside it
and do not grow per image). The baseline is the N-image run: a ratio near 1, and a growth per 1,000 extra
images near 0, mean memory does not grow with the stream. The default 8N = 2,048 strips give 24,576 patch-log
rows, five times the ``PATCH_LOG_ROWS_PER_FILE`` held in memory before staging.

What still grows, by design: the sorted list of names to inspect (one string per image), and the first
``MAX_ERRORS_KEPT`` error rows.

    .venv/bin/python -P bench/stream_memory.py [--images 256] [--factor 8]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from steelqc.batch_inspection import inspect_batch
from steelqc.config import ModelSettings
from steelqc.data.images import encode_png
from steelqc.data.synth import generate_strip
from steelqc.inference import Inspector
from steelqc.model import build_model
from steelqc.monitoring import PatchLog, build_reference
from steelqc.patches import extract_patches
from steelqc.thresholds import Thresholds

TARGET_RATIO = 1.25  # peak with 8x the images / peak with N images


def stream_folder(root: Path, sources: list[Path], count: int) -> Path:
    """``count`` image names, each a hard link to one of ``sources`` in turn."""
    folder = root / f"stream-{count}"
    folder.mkdir()
    for i in range(count):
        os.link(sources[i % len(sources)], folder / f"strip{i:06d}.png")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256, help="the baseline stream's length (N)")
    parser.add_argument("--factor", type=int, default=8, help="the long stream is factor x N images")
    args = parser.parse_args()

    model = build_model(ModelSettings(backbone="small_cnn", weights="none", input_size=32), 256)
    rng = np.random.default_rng(0)
    strips = [generate_strip(rng, defective_classes=(1 + i % 4,) if i % 2 else ())[0] for i in range(16)]
    _, reducer = build_reference(model, np.concatenate([extract_patches(s, 256, 128, "reflect")[0] for s in strips]))
    probe = Inspector(model, Thresholds(0.5, 0.9, 1.0, 1.0, 1.0, 0.5, 1, 1, True, "probe"), 256, 128, "reflect")
    worst = [r.worst_score for r in probe.inspect(strips)]  # about half the images HOLD or FAIL: overlays drawn
    thresholds = Thresholds(float(np.quantile(worst, 0.5)), float(np.quantile(worst, 0.75)),
                            1.0, 1.0, 1.0, 0.5, 1, 1, True, "bench")  # fmt: skip
    inspector = Inspector(model, thresholds, 256, 128, "reflect")
    with tempfile.TemporaryDirectory(prefix="steelqc-bench-stream-") as tmp:
        root = Path(tmp)
        sources = []
        for i, pixels in enumerate(strips):
            sources.append(root / f"source{i:02d}.png")
            sources[-1].write_bytes(encode_png(pixels))
        inspect_batch(inspector, stream_folder(root, sources, 8), root / "warm-up")  # graph tracing, imports
        peaks: dict[int, float] = {}
        for count in (args.images, args.images * args.factor):
            folder = stream_folder(root, sources, count)
            tracemalloc.start()
            started = time.perf_counter()
            result = inspect_batch(inspector, folder, root / f"out-{count}", workers=2, batch_images=8,
                                   patch_log=PatchLog(root / f"log-{count}"), reducer=reducer)  # fmt: skip
            seconds = time.perf_counter() - started
            peaks[count] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            logged = len(PatchLog(root / f"log-{count}").read())
            print(f"{count:6d} images: peak {peaks[count]:7.1f} MiB traced, {result.images / seconds:6.1f} images/s, "
                  f"{logged} patch-log rows, {result.overlay_count} overlays, {result.counts}")  # fmt: skip
    long = args.images * args.factor
    ratio = peaks[long] / peaks[args.images]
    growth = (peaks[long] - peaks[args.images]) / (long - args.images) * 1000
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    print(f"peak({long}) / peak({args.images}) = {ratio:.2f} (target <= {TARGET_RATIO}): {verdict}; "
          f"{growth:.2f} MiB more per 1,000 images; load average {os.getloadavg()[0]:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
