"""Prefect tasks of the batch-inspection flow: thin wrappers of :mod:`steelqc.batch_inspection`.

The model is loaded once per flow run and handed to the inspection task in memory (no result
persistence, no cache key: a Keras model is neither small nor meaningfully hashable).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from steelqc.batch_inspection import DecidedBy, inspect_batch
from steelqc.config import Settings
from steelqc.inference import Inspector
from steelqc.monitoring import MonitoringDataError, model_reference, patch_log_of
from steelqc.pyfunc import ModelMetadata, load_inspector
from steelqc.runtimes import AUTO
from steelqc.tracking import configure_tracking
from tasks.retries import tracking_retry_policy

TRACKING_RETRIES = tracking_retry_policy()


@task(name="load-model", cache_policy=NO_CACHE, **TRACKING_RETRIES)
def load_model(settings: Settings, model_uri: str) -> tuple[Inspector, ModelMetadata, Any]:
    """The Inspector of ``model_uri`` (the pyfunc's runtime choice, ``auto``, in the model's mode) and the PCA of
    its reference set (None, with a warning, if it has none)."""
    configure_tracking(settings)
    inspector, meta = load_inspector(model_uri, runtime=AUTO)
    if meta.runtime_note:
        get_run_logger().warning(meta.runtime_note)
    try:
        _, reducer = model_reference(str(meta.run_id))
    except MonitoringDataError as exc:
        get_run_logger().warning("%s; patches are logged without embeddings", exc)
        reducer = None
    return inspector, meta, reducer


@task(name="inspect-images", cache_policy=NO_CACHE, **TRACKING_RETRIES)
def inspect_images(
    inspector: Inspector,
    meta: ModelMetadata,
    reducer: Any,
    source: str,
    out_dir: Path,
    settings: Settings,
    *,
    image_size: tuple[int, int] | None,
    log_patches: bool,
) -> dict[str, Any]:
    """Decide on every image under ``source``; a summary with the counts, output paths and error rows."""
    result = inspect_batch(
        inspector, source, out_dir, workers=settings.data.image_workers,
        patch_log=patch_log_of(settings) if log_patches else None, reducer=reducer, image_size=image_size,
        endpoint_url=settings.data.s3_endpoint_url, model_version=meta.version,
        max_image_pixels=settings.data.max_image_pixels,
        decided_by=DecidedBy(meta.uri, meta.version, meta.runtime, card=meta.tags or {}),
    )  # fmt: skip
    return {
        "counts": result.counts,
        "decisions_csv": str(result.csv_path),
        "decisions_json": str(result.json_path),
        "report": str(result.report_path),
        "overlays": result.overlay_count,
        "errors": [{"image": image, "error": reason} for image, reason in result.errors],
        "images_per_second": round(result.images_per_second, 2),
        "patch_log_files": result.patch_log_files,
        "model_version": meta.version,
    }
