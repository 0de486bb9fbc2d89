"""Crafted hostile image files (issue 17), built in the tests from a few bytes: never stored, never downloaded."""

from __future__ import annotations

import numpy as np

from steelqc.data.images import encode_jpeg


def jpeg_with_corrupt_entropy(pixels: np.ndarray, *, n_bytes: int = 2000, seed: int = 0) -> bytes:
    """A JPEG of ``pixels`` with ``n_bytes`` random bytes written over the middle of its entropy-coded
    data; headers and the end marker are intact, so only the decoder's warning tells."""
    data = bytearray(encode_jpeg(pixels))
    start = len(data) // 2 - n_bytes // 2
    data[start : start + n_bytes] = np.random.default_rng(seed).integers(0, 256, n_bytes, dtype=np.uint8).tobytes()
    return bytes(data)
