"""MLflow tracking: where runs go (server or embedded store, experiments) and what a run records.

Everything here is cheap to import (no TensorFlow), so the QA commands can use it and start in seconds.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import urlopen

import mlflow
import numpy as np
import pandas as pd
import psutil
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.pandas_dataset import from_pandas
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import steelqc
from steelqc.config import Settings, TrackingSettings

PROJECT_ROOT = Path(steelqc.__file__).resolve().parents[1]
SERVER_SCHEMES = {"http", "https", "databricks"}
# Short by default so an unreachable server fails in seconds, not after MLflow's 7 retries with backoff.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
REACHABILITY_TIMEOUT_S = 5.0
# "<host> <pid> <process start time>" of the process running a `steelqc train` run: a later start tells a run
# whose process was killed (SIGKILL, power loss: MLflow never closed it) from one still training.
TAG_PROCESS = "steelqc.process"
TAG_ABANDONED = "steelqc.abandoned"


class TrackingUnavailableError(RuntimeError):
    """The configured MLflow tracking server cannot be reached."""


# --- where runs go -----------------------------------------------------------------------------------


def is_server_uri(uri: str) -> bool:
    """True for a tracking server (it owns artefact storage); False for a local database or folder."""
    return urlparse(uri).scheme in SERVER_SCHEMES


def configure_tracking(settings: Settings) -> str:
    """Point MLflow at ``settings.mlflow_tracking_uri`` and fail fast if it is a server that is down.

    The URI is an explicit setting, else ``$MLFLOW_TRACKING_URI``, else SQLite in the state dir.
    """
    uri = settings.mlflow_tracking_uri
    if is_server_uri(uri):
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        if urlparse(uri).scheme != "databricks":
            _check_reachable(uri)
    elif uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def _check_reachable(uri: str) -> None:
    try:
        with urlopen(f"{uri.rstrip('/')}/health", timeout=REACHABILITY_TIMEOUT_S):
            return
    except HTTPError:  # the server answered (auth, proxy, old version): it is reachable
        return
    except (URLError, OSError) as exc:
        raise TrackingUnavailableError(
            f"MLflow tracking server {uri} is unreachable ({exc}). Start it, fix "
            "MLFLOW_TRACKING_URI / tracking.tracking_uri, or unset both to use the embedded SQLite store."
        ) from exc


def experiment_name(tracking: TrackingSettings, subject: str) -> str:
    """``<prefix>-<subject>``: one experiment per dataset, plus ``monitoring`` and ``promotions``."""
    return f"{tracking.experiment_prefix}-{subject}"


def ensure_experiment(settings: Settings, subject: str) -> str:
    """The id of experiment :func:`experiment_name`, created on first use; the one place experiments are made.

    A local store (SQLite, a folder) keeps the artefacts under the state dir; a server decides where they go.
    """
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    name = experiment_name(settings.tracking, subject)
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    artifact_location = None
    if not is_server_uri(settings.mlflow_tracking_uri):
        artifact_location = (settings.mlflow_artifact_root / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:  # created concurrently by another run
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


# --- what a run records ------------------------------------------------------------------------------


def flatten_settings(settings: Settings) -> dict[str, str]:
    """The full configuration as ``section.field`` → string, ready for ``mlflow.log_params``."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            flat[prefix] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)

    walk("", settings.model_dump(mode="json"))
    return flat


def log_epoch_metrics(epoch: int, logs: Mapping[str, Any]) -> None:
    """Log one epoch's numeric Keras logs at step ``epoch`` (training's ``on_epoch_end`` callback)."""
    numeric = {key: float(value) for key, value in logs.items() if isinstance(value, (int, float, np.number))}
    if numeric:
        mlflow.log_metrics(numeric, step=int(epoch))


def dataset_source(root: str) -> DatasetSource:
    """Where a dataset lives, declared: MLflow's guess from a bare local path is ambiguous (and says so)."""
    # registered at import: mlflow.data makes one class per artifact repository, which mypy cannot see
    from mlflow.data.sources import LocalArtifactDatasetSource, S3ArtifactDatasetSource  # type: ignore[attr-defined]

    return S3ArtifactDatasetSource(root) if root.startswith("s3://") else LocalArtifactDatasetSource(root)


def log_lineage(
    data_hash: str, validation_summary: Mapping[str, Any], index: pd.DataFrame, source: str, dataset_name: str
) -> None:
    """Record what the run was trained on: data hash and validation summary as tags, the patch index as input.

    The logged dataset declares the index's integer columns as doubles, as MLflow advises: its schema is
    inferred from the frame and warns about integer columns otherwise (the index has no missing values).
    """
    tags = {"data_hash": data_hash, "dataset": dataset_name, "dataset_source": source}
    tags.update({f"validation.{k}": str(v) for k, v in validation_summary.items() if not isinstance(v, (list, dict))})
    mlflow.set_tags(tags)
    mlflow.log_dict(dict(validation_summary), "validation/summary.json")
    as_doubles = index.astype({column: "float64" for column in index.select_dtypes("integer").columns})
    patch_dataset = from_pandas(
        as_doubles, source=dataset_source(source), targets="label", name=f"{dataset_name}-patches"
    )
    mlflow.log_input(patch_dataset, context="training", tags={"data_hash": data_hash})


def log_evaluation(metrics: Mapping[str, float], report_json: str, plots: Sequence[str | Path]) -> None:
    """The test-split metrics, the full report and its plots on the active run."""
    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)})
    mlflow.log_text(report_json, "evaluation/report.json")
    for plot in plots:
        mlflow.log_artifact(str(plot), "evaluation/plots")


def git_commit() -> str:
    """The checked-out commit of the project, or ``"unknown"`` outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


# --- runs left open by a killed process ---------------------------------------------------------------


def process_identity() -> str:
    """:data:`TAG_PROCESS` of this process."""
    me = psutil.Process()
    return f"{socket.gethostname()} {me.pid} {me.create_time():.3f}"


def _process_ended(identity: str) -> bool:
    """True when the process of a :data:`TAG_PROCESS` value is gone; False when alive or on another machine."""
    try:
        host, pid, started = identity.split(" ")
        if host != socket.gethostname():
            return False
        return abs(psutil.Process(int(pid)).create_time() - float(started)) > 0.01  # the pid was reused
    except psutil.NoSuchProcess:
        return True
    except (ValueError, psutil.Error):  # not written by this code, or not ours to inspect: leave it
        return False


def fail_abandoned_runs(experiment_id: str, job: str) -> list[str]:
    """Mark RUNNING runs of ``job`` whose process has ended FAILED (tag :data:`TAG_ABANDONED` says why).

    A killed ``steelqc train`` cannot close its run, and a run RUNNING forever looks like a training in
    progress. Runs whose process is alive or on another machine are left alone. Returns the runs marked.
    """
    client = MlflowClient()
    runs = client.search_runs([experiment_id], f"attributes.status = 'RUNNING' and tags.job = '{job}'")
    abandoned = [run for run in runs if _process_ended(run.data.tags.get(TAG_PROCESS, ""))]
    for run in abandoned:
        client.set_tag(run.info.run_id, TAG_ABANDONED, "its process ended without closing the run (killed?)")
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
        logging.getLogger(__name__).warning(
            "MLflow run %s of an earlier %s was left RUNNING by a process that ended: marked FAILED",
            run.info.run_id,
            job,
        )
    return [run.info.run_id for run in abandoned]
