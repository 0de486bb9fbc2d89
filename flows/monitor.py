"""The ``monitor-drift`` deployment: the production patch log against the champion's reference.

Composition only. When drift is found and ``monitoring.trigger_retrain`` is on, it starts the
``retrain`` deployment and returns without waiting; in Prefect's ephemeral mode (no ``PREFECT_API_URL``)
there is no deployment to start, so it only reports.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger

from flows.context import current_flow_run
from steelqc.config import load_settings, resolve_profile
from steelqc.promotion import champion_uri
from tasks import monitoring as t


@flow(name="monitor", log_prints=True)
def monitor(
    config: str | None = None,
    since: date | None = None,
    until: date | None = None,
    model: str | None = None,
    reference: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Drift report of ``since``..``until`` (default: the last ``monitoring.window_days``); may trigger retraining."""
    logger = get_run_logger()
    settings = load_settings(resolve_profile(config), overrides)
    model = model or champion_uri(settings)
    first = since or datetime.now(UTC).date() - timedelta(days=settings.monitoring.window_days)
    out_dir = settings.state_dir / "reports" / f"monitor-{current_flow_run().id}"

    version, run_id = t.resolve_model(settings, model)
    reference_set = t.load_reference_set(run_id, reference)
    current, others = t.read_patch_log(settings, first, until, version)
    if others:
        logger.info("%d logged patches of other model versions are not compared with v%s's reference", others, version)
    result = t.drift_check(reference_set, current, out_dir, settings.monitoring)
    params = {"model": model, "model_version": str(version), "since": str(first), "until": str(until or "today")}
    mlflow_run_id = t.log_to_mlflow(settings, result, params)

    retrain_run_id = None
    if not result.drift_detected:
        action = "no drift"
    elif not settings.monitoring.trigger_retrain:
        action = "drift detected; retraining not triggered (monitoring.trigger_retrain is off)"
    elif not os.environ.get("PREFECT_API_URL"):
        action = "drift detected; retraining not triggered (ephemeral mode: no Prefect API, no deployment)"
    else:
        # only what this run was given: the deployment's own parameters (data, its profile) fill in the rest
        given = {"config": config, "overrides": overrides}
        retrain_run_id = t.trigger_retrain({key: value for key, value in given.items() if value is not None})
        action = f"drift detected; started {t.RETRAIN_DEPLOYMENT} run {retrain_run_id}"
    logger.info("%s. Report: %s", action, result.html_path)
    return {
        **result.summary(),
        "model_version": version,
        "since": str(first),
        "mlflow_run_id": mlflow_run_id,
        "retrain_flow_run_id": retrain_run_id,
        "action": action,
    }
