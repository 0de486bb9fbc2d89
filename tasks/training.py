"""Prefect tasks of the retraining flow: thin wrappers of ``steelqc`` library calls.

Every task takes and returns small, picklable values (paths, dicts, a DataFrame) and writes its heavy
outputs (checkpoints, reports) under the run's work folder, so persisted results stay small and a
suspended run resumes by reloading them instead of recomputing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import mlflow
import pandas as pd
from prefect import task

from steelqc import promotion, train_job
from steelqc.config import Settings
from steelqc.evaluation import EvaluationReport
from steelqc.gate import GateDecision, RecallBound, gate
from steelqc.thresholds import Thresholds
from steelqc.tracking import configure_tracking, ensure_experiment, log_lineage, run_name
from steelqc.validation import load_manifest
from tasks.data import RESUMABLE, clean_dataset
from tasks.retries import tracking_retry_policy

# MLflow and the tracking server may come back; so may the network under them.
TRACKING_RETRIES = tracking_retry_policy()



@task(name="start-mlflow-run", persist_result=True, cache_policy=RESUMABLE, **TRACKING_RETRIES)
def start_run(
    settings: Settings, validation: dict[str, Any], index: pd.DataFrame, work_dir: Path, flow_run_id: str
) -> str:
    """Open the MLflow run every later task logs into: full config, lineage, git commit, the Prefect run."""
    configure_tracking(settings)
    experiment_id = ensure_experiment(settings, validation["dataset_name"])
    name = validation["dataset_name"]
    root = load_manifest(validation["manifest_path"])[0]
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name("retrain", name, settings)) as run:
        train_job.log_run_start(settings, "retrain", work_dir, (name, root), {"prefect.flow_run_id": flow_run_id})
        log_lineage(validation["data_hash"], validation["summary"], index, root, validation["dataset_name"])
    return run.info.run_id


@task(name="train", persist_result=True, cache_policy=RESUMABLE)
def train(manifest_path: str, index: pd.DataFrame, settings: Settings, work_dir: Path, run_id: str) -> dict[str, Any]:
    """Two-stage class-weighted training; resumes from the run's checkpoints if interrupted."""
    configure_tracking(settings)
    with mlflow.start_run(run_id=run_id):
        try:
            result = train_job.train(clean_dataset(manifest_path, settings), index, settings, work_dir / "checkpoints")
        except KeyboardInterrupt:
            train_job.close_interrupted_run("interrupted during the retraining flow's training")
            raise
    return {"model_path": str(work_dir / "checkpoints" / "best.keras"), "record": result.record()}


@task(name="choose-thresholds", persist_result=True, cache_policy=RESUMABLE)
def choose_thresholds(
    manifest_path: str, index: pd.DataFrame, settings: Settings, training: dict[str, Any], run_id: str
) -> dict[str, Any]:
    """Operating points from validation scores only (the test split is not read here), logged with the training."""
    model = keras.models.load_model(training["model_path"])
    scores = train_job.split_scores(model, clean_dataset(manifest_path, settings), index, "val", settings)
    thresholds = train_job.select_thresholds(index, scores, settings)
    configure_tracking(settings)
    with mlflow.start_run(run_id=run_id):
        train_job.log_training(training["record"], thresholds)
    return thresholds.to_dict()


@task(name="evaluate", persist_result=True, cache_policy=RESUMABLE)
def evaluate(
    manifest_path: str, index: pd.DataFrame, settings: Settings, training: dict[str, Any],
    thresholds: dict[str, Any], work_dir: Path,
) -> EvaluationReport:
    """Score the test split once in the model's mode, at fixed thresholds; metrics, missed defects, plots."""
    model = keras.models.load_model(training["model_path"])
    clean = clean_dataset(manifest_path, settings)
    return train_job.evaluate_in_mode(model, clean, index, Thresholds.from_dict(thresholds), settings,
                                      work_dir / "evaluation")  # fmt: skip


@task(name="register-model", persist_result=True, cache_policy=RESUMABLE, **TRACKING_RETRIES)
def register(
    manifest_path: str, index: pd.DataFrame, settings: Settings, training: dict[str, Any],
    thresholds: dict[str, Any], evaluation: EvaluationReport, data_hash: str, run_id: str,
) -> str:
    """Log the evaluation and the decision-making pyfunc, register a new version; return its number."""
    model = keras.models.load_model(training["model_path"])
    clean = clean_dataset(manifest_path, settings)
    configure_tracking(settings)
    with mlflow.start_run(run_id=run_id):
        _, version = train_job.log_and_register(
            model, Thresholds.from_dict(thresholds), evaluation, data_hash, clean, index, settings
        )
    return str(version.version)


@task(name="score-champion", persist_result=True, cache_policy=RESUMABLE, **TRACKING_RETRIES)
def score_champion(manifest_path: str, index: pd.DataFrame, settings: Settings, work_dir: Path) -> dict[str, Any]:
    """Re-score the current champion on *this* run's test split, so the gate compares like with like."""
    configure_tracking(settings)
    version = promotion.champion_version(settings)
    if version is None:
        return {"version": None, "metrics": None, "error": None}
    try:
        report = train_job.score_model_on_split(
            promotion.champion_uri(settings),
            clean_dataset(manifest_path, settings),
            index,
            settings,
            work_dir / "champion",
        )
    except Exception as exc:  # noqa: BLE001 - any failure to load or score the champion must fail the gate safe
        return {"version": version, "metrics": None, "error": f"{type(exc).__name__}: {exc}"}
    return {"version": version, "metrics": dict(report.metrics), "error": None}


@task(name="gate", persist_result=True, cache_policy=RESUMABLE)
def run_gate(
    settings: Settings, version: str, evaluation: EvaluationReport, thresholds: dict[str, Any],
    champion: dict[str, Any], flow_run_id: str | None,
) -> dict[str, Any]:
    """Apply the champion/challenger rule and record it on the version and in the promotions history."""
    decision = gate(
        evaluation.metrics,
        champion["metrics"],
        recall_target=settings.gate_recall_target,
        tolerance=settings.gate.recall_tolerance,
        min_specificity=settings.gate.min_patch_specificity,
        recall_bound=RecallBound.of(Thresholds.from_dict(thresholds), settings.thresholds),
        champion_version=champion["version"],
        champion_error=champion["error"],
    )
    promotion.record_gate(settings, version, decision, flow_run_id=flow_run_id)
    return decision.to_dict()


@task(name="promote", persist_result=True, **TRACKING_RETRIES)
def promote(settings: Settings, version: str, decision: dict[str, Any], reviewer: str, comment: str) -> str:
    """Move the champion alias if nothing raced this run since its gate."""
    record = promotion.promote(
        settings, version, reviewer=reviewer, comment=comment,
        expected_champion=GateDecision.from_dict(decision).champion_version,
    )
    return record.version


@task(name="reject", persist_result=True, **TRACKING_RETRIES)
def reject(settings: Settings, version: str, reviewer: str, comment: str, status: str = "rejected") -> None:
    promotion.reject(settings, version, reviewer=reviewer, comment=comment, status=status)
