"""MLflow glue of monitoring: a drift check as a run of the monitoring experiment (written and read back), a model
URI to its version."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from steelqc.monitoring.drift import DriftResult

if TYPE_CHECKING:
    from steelqc.config import Settings

def log_drift_run(settings: Settings, result: DriftResult, params: dict[str, str]) -> str:
    """Record one drift check in the ``<prefix>-monitoring`` MLflow experiment; the run id."""
    import mlflow

    from steelqc.tracking import ensure_experiment

    experiment_id = ensure_experiment(settings, "monitoring")
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"drift-{datetime.now(UTC):%Y%m%d-%H%M%S}") as run:
        mlflow.log_params(params)
        mlflow.log_metrics(result.metrics())
        mlflow.set_tags(
            {"drift_detected": str(result.drift_detected).lower(), "reasons": "; ".join(result.reasons)[:5000]}
        )
        mlflow.log_artifact(str(result.html_path), "drift")
        mlflow.log_artifact(str(result.json_path), "drift")
        return run.info.run_id


def model_version_of(model_uri: str) -> tuple[str | None, str]:
    """``(registered version or None, run id)`` behind ``models:/name@alias``, ``models:/name/N`` or ``runs:/…``."""
    from mlflow.models import get_model_info

    from steelqc.registry import registered_version

    version = registered_version(model_uri)
    if version is not None:
        return str(version.version), str(version.run_id)
    return None, str(get_model_info(model_uri).run_id)


@dataclass(frozen=True)
class DriftCheck:
    """The latest ``steelqc monitor`` run of one model version (a run of the ``<prefix>-monitoring`` experiment)."""

    run_id: str
    experiment_id: str
    time: str
    drift_detected: bool
    reasons: str
    window: str


def latest_drift_check(settings: Settings, version: str) -> DriftCheck | None:
    """The newest drift check of ``version``; None when it was never checked."""
    from mlflow.tracking import MlflowClient

    from steelqc.tracking import experiment_name

    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name(settings.tracking, "monitoring"))
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id], f"params.model_version = '{version}'", max_results=1,
        order_by=["attributes.start_time DESC"],
    )  # fmt: skip
    if not runs:
        return None
    run = runs[0]
    params = run.data.params
    return DriftCheck(
        run_id=run.info.run_id,
        experiment_id=experiment.experiment_id,
        time=datetime.fromtimestamp(run.info.start_time / 1000, UTC).isoformat(timespec="seconds"),
        drift_detected=run.data.tags.get("drift_detected") == "true",
        reasons=run.data.tags.get("reasons", ""),
        window=f"{params.get('since', '?')} to {params.get('until', '?')}",
    )
