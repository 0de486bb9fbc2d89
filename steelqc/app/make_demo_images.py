"""Write the demo strips shipped with the package: ``python -m steelqc.app.make_demo_images``.

Generated (not real) strips, so the app has something to inspect on any machine without downloads.
One clean strip and three defective ones, each with one clearly visible defect class; the seed fixes
the bytes, so re-running the script leaves the checked-in files unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from steelqc.data.images import encode_png
from steelqc.data.synth import generate_strip

DEMO_DIR = Path(__file__).resolve().parents[1] / "demo_images"
#: File stem -> defect classes drawn on the strip (Severstal ids: 1 pits, 3 scratches, 4 patches).
DEMO_STRIPS: dict[str, tuple[int, ...]] = {
    "clean": (),
    "pits": (1,),
    "scratches": (3,),
    "patches": (4,),
}
SEED = 8
CONTRAST = 1.6


def write_demo_images(out_dir: Path = DEMO_DIR) -> list[Path]:
    """Generate the demo strips as PNG files in ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for offset, (stem, classes) in enumerate(DEMO_STRIPS.items()):
        pixels, _masks = generate_strip(
            np.random.default_rng(SEED + offset), defective_classes=classes, contrast=CONTRAST
        )
        path = out_dir / f"{stem}.png"
        path.write_bytes(encode_png(pixels))
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_demo_images():
        print(written_path)
