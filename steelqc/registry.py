"""MLflow model registry: versions, their tags and aliases (``champion``, ``previous-champion``; no stages).

Logging the model itself is :mod:`steelqc.pyfunc`; runs and experiments are :mod:`steelqc.tracking`.
"""

from __future__ import annotations

from collections.abc import Mapping

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from steelqc.thresholds import Thresholds
from steelqc.tracking import git_commit

VERSION_TAGS = ("recall", "recall_bound", "precision", "specificity", "t_pass", "t_fail", "data_hash", "git_commit")
# Image-level test metrics tagged beside the patch-level ones: a coil is passed or stopped per image.
IMAGE_METRIC_TAGS = ("image_recall", "image_precision", "image_specificity")


def version_tags(metrics: Mapping[str, float], thresholds: Thresholds, data_hash: str) -> dict[str, str]:
    """The tags every registered version carries: test-split patch metrics, thresholds, lineage.

    Image-level metrics (:data:`IMAGE_METRIC_TAGS`) are added when ``metrics`` has them.
    """
    image_tags = {name: f"{metrics[name]:.6f}" for name in IMAGE_METRIC_TAGS if metrics.get(name) is not None}
    return {
        "recall": f"{metrics['patch_recall']:.6f}",
        "recall_bound": f"{thresholds.recall_bound:.6f}",
        "precision": f"{metrics['patch_precision']:.6f}",
        "specificity": f"{metrics['patch_specificity']:.6f}",
        "t_pass": f"{thresholds.t_pass:.6f}",
        "t_fail": f"{thresholds.t_fail:.6f}",
        "data_hash": data_hash,
        "git_commit": git_commit(),
        **image_tags,
    }


def register_version(model_uri: str, name: str, tags: Mapping[str, str]) -> ModelVersion:
    """Register ``model_uri`` as a new version of ``name`` (created if needed) carrying ``tags``."""
    return mlflow.register_model(model_uri, name, tags=dict(tags))


def registered_version(model_uri: str) -> ModelVersion | None:
    """The registry entry behind ``models:/name@alias`` or ``models:/name/version``; None for other URIs."""
    if not model_uri.startswith("models:/"):
        return None
    ref = model_uri.removeprefix("models:/")
    client = MlflowClient()
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return client.get_model_version_by_alias(name, alias)
    if "/" in ref:
        name, number = ref.split("/", 1)
        return client.get_model_version(name, number)
    return None


def __getattr__(name: str) -> object:
    """Versions logged before the pyfunc moved to :mod:`steelqc.pyfunc` pickled it as ``steelqc.registry.SteelQCModel``.

    Resolved lazily: :mod:`steelqc.pyfunc` imports this module.
    """
    if name == "SteelQCModel":
        from steelqc.pyfunc import SteelQCModel

        return SteelQCModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
