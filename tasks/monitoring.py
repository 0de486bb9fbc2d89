"""Prefect tasks of the drift-monitoring flow: thin wrappers of :mod:`steelqc.monitoring`.

Every step that talks to MLflow, the patch log (maybe S3) or the Prefect API retries; data frames are
passed in memory without cache keys (hashing a large frame would cost more than the step).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from steelqc.config import MonitoringSettings, Settings
from steelqc.monitoring import (
    DriftResult,
    drift_report,
    log_drift_run,
    model_reference,
    model_version_of,
    patch_log_of,
    read_window,
)
from steelqc.tracking import configure_tracking
from tasks.retries import tracking_retry_policy

TRACKING_RETRIES = tracking_retry_policy()
RETRAIN_DEPLOYMENT = "retrain/retrain"


@task(name="resolve-model", cache_policy=NO_CACHE, **TRACKING_RETRIES)
def resolve_model(settings: Settings, model_uri: str) -> tuple[str | None, str]:
    """``(version, run id)`` of the model whose reference the production window is compared with."""
    configure_tracking(settings)
    return model_version_of(model_uri)


@task(name="load-reference", cache_policy=NO_CACHE, **TRACKING_RETRIES)
def load_reference_set(run_id: str, folder: str | None) -> pd.DataFrame:
    """The reference set logged with the model's run, or the one in ``folder`` when given."""
    return model_reference(run_id, folder)[0]


@task(name="read-patch-log", cache_policy=NO_CACHE, **TRACKING_RETRIES)
def read_patch_log(
    settings: Settings, since: date | None, until: date | None, model_version: str | None
) -> tuple[pd.DataFrame, int]:
    """The production window of ``model_version`` and how many rows of other versions were left out."""
    return read_window(patch_log_of(settings), since, until, model_version)


@task(name="drift-report", cache_policy=NO_CACHE)
def drift_check(
    reference: pd.DataFrame, current: pd.DataFrame, out_dir: Path, settings: MonitoringSettings
) -> DriftResult:
    """Evidently report + JSON summary of the window against the reference."""
    return drift_report(reference, current, out_dir, settings)


@task(name="log-drift-run", cache_policy=NO_CACHE, **TRACKING_RETRIES)
def log_to_mlflow(settings: Settings, result: DriftResult, params: dict[str, str]) -> str:
    """Metrics and the report in the ``<prefix>-monitoring`` experiment; the MLflow run id."""
    configure_tracking(settings)
    return log_drift_run(settings, result, params)


@task(name="trigger-retrain", cache_policy=NO_CACHE, **TRACKING_RETRIES)
def trigger_retrain(parameters: dict[str, Any]) -> str:
    """Start a run of the ``retrain`` deployment without waiting for it; its flow run id."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    flow_run = run_deployment(RETRAIN_DEPLOYMENT, parameters=parameters, timeout=0, tags=["drift-triggered"])
    assert isinstance(flow_run, FlowRun)  # a sync task: the sync implementation ran, not the coroutine
    return str(flow_run.id)
