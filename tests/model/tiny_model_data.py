"""Tiny settings and patches for model tests: 32-px patches, a few dozen samples (2 shared CPU cores)."""

from __future__ import annotations

import numpy as np

from steelqc.config import Settings, load_settings
from steelqc.thresholds import Thresholds

TINY = {
    "model.backbone": "small_cnn",
    "model.weights": "none",
    "model.input_size": 32,
    "patches.size": 32,
    "patches.stride": 32,
    "patches.min_defect_pixels": 4,
    "train.batch_size": 16,
    "train.augment": False,
    "data.image_workers": 2,
}


def tiny_settings(**overrides: object) -> Settings:
    """A small_cnn on 32×32 patches; ``overrides`` use dotted keys with ``__`` for the dot."""
    return load_settings(None, {**TINY, **{k.replace("__", "."): v for k, v in overrides.items()}})


def blob_patches(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy grey patches; every second one carries a bright 8×8 'defect'. uint8 (n,size,size), labels (n,)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(120, 15, (n, size, size))
    y = np.arange(n) % 2
    for i in np.flatnonzero(y):
        r, c = rng.integers(2, size - 10, 2)
        x[i, r : r + 8, c : c + 8] += 80
    return x.clip(0, 255).astype(np.uint8), y.astype(np.float32)


def thresholds_between(scores: np.ndarray) -> Thresholds:
    """t_pass and t_fail in the widest gaps between neighbouring scores of the lower and the upper middle.

    A threshold in a wide gap keeps every score clear of it, so runtimes whose scores differ by ~1e-6
    cannot flip a decision by chance, and all three decisions occur.
    """
    s = np.sort(np.asarray(scores, np.float64))
    gaps, middles = np.diff(s), (s[1:] + s[:-1]) / 2
    n = len(gaps)
    lower, upper = slice(n // 5, n // 2), slice(n // 2, 4 * n // 5)
    t_pass = float(middles[lower][np.argmax(gaps[lower])])
    t_fail = float(middles[upper][np.argmax(gaps[upper])])
    return Thresholds(t_pass, t_fail, 1.0, 1.0, 1.0, 0.5, 1, 1, True, "between neighbouring scores")
