"""Wall time and peak memory of the validation gate on a full-size generated dataset, beside a decode-only floor.

The dataset has the real set's size (12,568 images of 256×1600, ~7,100 masks in the real class mix);
it is generated once into ``--data`` and reused. The gate (parallel scan + three GX suites + Data Docs)
runs in a child process so its peak RSS is its own. The baseline is a single-threaded read + decode of
a sample of the same files, scaled to all of them: the unavoidable cost of looking at every image once.
Targets: under 5 minutes and under 2 GiB on 2 cores.

    .venv/bin/python bench/validate.py [--images 12568] [--data DIR] [--workers 4] [--baseline-sample 500]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from steelqc.config import ValidationSettings
from steelqc.data.dataset import IMAGES_DIR, Dataset
from steelqc.data.images import decode_image_bytes
from steelqc.data.synth import generate_dataset
from steelqc.validation import validate_dataset

TARGET_SECONDS = 300.0
TARGET_BYTES = 2 * 1024**3


def decode_floor(root: Path, sample: int) -> float:
    """Seconds to read and decode every image once on one thread, scaled from ``sample`` files."""
    files = sorted((root / IMAGES_DIR).iterdir())
    step = max(1, len(files) // sample)
    chosen = files[::step][:sample]
    started = time.perf_counter()
    for path in chosen:
        decode_image_bytes(path.read_bytes(), name=str(path))
    return (time.perf_counter() - started) * len(files) / len(chosen)


def measure(root: str, report: str, workers: int) -> dict[str, object]:
    """Run the gate once (quarantine mode, the retraining default) in this process."""
    started = time.perf_counter()
    result = validate_dataset(Dataset.open(root), ValidationSettings(), report, mode="quarantine", workers=workers)
    seconds = time.perf_counter() - started
    summary = json.loads(result.summary_path.read_text())
    return {
        "seconds": seconds,
        "scan_seconds": summary["scan_seconds"],
        "gx_seconds": summary["gx_seconds"],
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "success": result.success,
        "images": result.n_images,
        "label_rows": result.n_label_rows,
        "failed": [f"{f['suite']}.{f['column']}" for f in result.failed_expectations],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12568)
    parser.add_argument("--data", type=Path, default=None, help="Generated dataset folder (created if missing)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--baseline-sample", type=int, default=500)
    parser.add_argument("--measure", nargs=2, metavar=("ROOT", "REPORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure, workers=args.workers)))
        return 0

    root = args.data or Path(tempfile.gettempdir()) / f"steelqc-bench-validate-{args.images}"
    if not (root / "train.csv").exists():
        print(f"generating {args.images} images into {root} (once) ...", flush=True)
        summary = generate_dataset(root, args.images, seed=0)
        print(f"  {summary.images} images, {summary.defective} defective, in {summary.seconds:.0f} s", flush=True)
    floor = decode_floor(root, args.baseline_sample)
    with tempfile.TemporaryDirectory() as report:
        child = subprocess.run(
            # -P as in the Makefile: without it bench/inspect.py shadows the standard library's inspect
            [sys.executable, "-P", __file__, "--measure", str(root), report, "--workers", str(args.workers)],
            check=True,
            capture_output=True,
            text=True,
        )
    run = json.loads(child.stdout.strip().splitlines()[-1])
    seconds, peak = float(run["seconds"]), int(run["peak_rss_bytes"])
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}, workers {args.workers}")
    print(f"dataset: {run['images']} images, {run['label_rows']} label rows; valid: {run['success']} {run['failed']}")
    print(
        f"validate: {seconds:.1f} s (scan {run['scan_seconds']:.1f} s, GX {run['gx_seconds']:.1f} s), "
        f"peak RSS {peak / 2**20:.0f} MiB"
    )
    print(f"baseline: 1-thread read+decode of every image {floor:.1f} s; validate / baseline {seconds / floor:.2f}")
    ok = seconds < TARGET_SECONDS and peak < TARGET_BYTES
    print(f"target < {TARGET_SECONDS:.0f} s and < {TARGET_BYTES / 2**30:.0f} GiB: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
