"""The ``inspect-batch`` deployment: PASS / HOLD / FAIL for every image under a folder or s3:// prefix.

Composition only: load the model (and its reference PCA for the patch log) once, then inspect. The
decisions, overlays and patch log are written by the library; the flow returns a small summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.context import current_flow_run
from steelqc.config import load_settings, resolve_profile
from steelqc.promotion import champion_uri
from tasks import inspection as t


@flow(name="inspect-batch", log_prints=True)
def inspect_batch(
    source: str,
    config: str | None = None,
    out: str | None = None,
    model: str | None = None,
    image_size: tuple[int, int] | None = (256, 1600),
    log_patches: bool = True,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Inspect ``source`` with ``model``; decisions go to ``out`` (default ``<state>/reports/inspect-<run id>``)."""
    settings = load_settings(resolve_profile(config), overrides)
    model = model or champion_uri(settings)
    out_dir = Path(out) if out else settings.state_dir / "reports" / f"inspect-{current_flow_run().id}"
    inspector, meta, reducer = t.load_model(settings, model)
    summary = t.inspect_images(
        inspector, meta, reducer, source, out_dir, settings, image_size=image_size, log_patches=log_patches
    )
    logger = get_run_logger()
    logger.info("%s with v%s: %s -> %s", source, meta.version, summary["counts"], summary["decisions_csv"])
    for row in summary["errors"]:
        logger.warning("could not inspect %s: %s", row["image"], row["error"])
    return summary
