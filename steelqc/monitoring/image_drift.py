"""Is one image like the data the champion was trained on? Its patch features against the champion's reference.

The production drift report (:func:`steelqc.monitoring.drift.drift_report`) judges a window of many patches; an
operator needs an answer for the one image on screen. Each feature of :func:`~.features.patch_features`
is checked the simple way: the share of the image's patches outside the central range of the reference
(its validation patches). A real strip shown to a model trained on generated ones is far outside in light,
contrast and texture, and its decision is not evidence of anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from steelqc.config import MonitoringSettings
from steelqc.monitoring.features import FEATURE_COLUMNS, patch_features


@dataclass(frozen=True)
class UnusualFeature:
    """A feature in which most of the image's patches fall outside the reference's central range."""

    feature: str
    image_median: float
    reference_low: float
    reference_high: float
    share_outside: float

    def describe(self) -> str:
        return (
            f"{self.feature} {self.image_median:.3g} (training {self.reference_low:.3g}–{self.reference_high:.3g}, "
            f"{self.share_outside:.0%} of patches outside)"
        )


@dataclass(frozen=True)
class ImageDrift:
    """The features that make an image unlike the reference; none means it looks like the training data."""

    unusual: list[UnusualFeature]
    n_patches: int
    n_reference: int

    @property
    def unlike_training(self) -> bool:
        return bool(self.unusual)

    def message(self) -> str:
        if not self.unusual:
            return f"like the training data in {', '.join(FEATURE_COLUMNS)}"
        return "unlike the training data: " + "; ".join(u.describe() for u in self.unusual)


def image_drift(patches: np.ndarray, reference: pd.DataFrame, settings: MonitoringSettings) -> ImageDrift:
    """Compare the ``uint8 (N, S, S)`` patches of one image with a champion's reference set of patch features.

    A feature is unusual when at least ``settings.image_unusual_share`` of the patches lie outside the
    reference's ``[image_tail, 1 - image_tail]`` quantiles; an image of the training distribution has about
    ``2 * image_tail`` of its patches outside in each feature.
    """
    missing = [c for c in FEATURE_COLUMNS if c not in reference.columns]
    if reference.empty or missing:
        raise ValueError(f"reference set lacks rows or columns {missing}")
    features = patch_features(patches)
    unusual = []
    for column in FEATURE_COLUMNS:
        low, high = np.quantile(reference[column].to_numpy(np.float64), [settings.image_tail, 1 - settings.image_tail])
        values = features[column].to_numpy(np.float64)
        outside = float(np.mean((values < low) | (values > high))) if len(values) else 0.0
        if outside >= settings.image_unusual_share:
            unusual.append(UnusualFeature(column, float(np.median(values)), float(low), float(high), outside))
    return ImageDrift(unusual, len(features), len(reference))
