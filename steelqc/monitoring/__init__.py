"""Production monitoring: per-patch features, the date-partitioned patch log, and Evidently drift reports.

Every inspected patch is described by cheap image statistics (light, contrast, focus, texture, strip
border), the model score and a PCA-reduced penultimate-layer embedding (:mod:`.features`). The same
description computed on the champion's validation patches is the *reference* (:mod:`.reference`, logged
with the model version); the production patch log (:mod:`.patch_log`) is compared with it by Evidently
(:mod:`.drift`: ``DataDriftPreset`` on the features and the score, ``EmbeddingsDrift`` on the embeddings),
so a changed light, a dirty lens or a defect look the model never saw shows up before recall drops.
Drift checks are recorded as MLflow runs (:mod:`.mlflow_runs`). One image on the Inspect page is checked
against the reference on its own (:mod:`.image_drift`).

The names below are the package's public interface; each lives in the module of its one job.
"""

from steelqc.monitoring.drift import DriftResult, drift_report
from steelqc.monitoring.features import (
    EMBEDDING_PREFIX,
    FEATURE_COLUMNS,
    SCORE_COLUMN,
    EmbeddingRecorder,
    MonitoringDataError,
    embedding_columns,
    fit_embedding_reducer,
    load_embedding_reducer,
    patch_features,
    patch_frame,
    save_embedding_reducer,
    scores_and_embeddings,
)
from steelqc.monitoring.image_drift import ImageDrift, image_drift
from steelqc.monitoring.mlflow_runs import DriftCheck, latest_drift_check, log_drift_run, model_version_of
from steelqc.monitoring.patch_log import PatchLog, patch_log_of, read_window
from steelqc.monitoring.reference import (
    MONITORING_ARTIFACT_DIR,
    build_reference,
    load_reference,
    log_reference,
    model_reference,
    reference_patches,
    save_reference,
)

__all__ = [
    "EMBEDDING_PREFIX",
    "FEATURE_COLUMNS",
    "MONITORING_ARTIFACT_DIR",
    "SCORE_COLUMN",
    "DriftCheck",
    "DriftResult",
    "EmbeddingRecorder",
    "ImageDrift",
    "MonitoringDataError",
    "PatchLog",
    "build_reference",
    "drift_report",
    "embedding_columns",
    "fit_embedding_reducer",
    "image_drift",
    "latest_drift_check",
    "load_embedding_reducer",
    "load_reference",
    "log_drift_run",
    "log_reference",
    "model_reference",
    "model_version_of",
    "patch_features",
    "patch_frame",
    "patch_log_of",
    "read_window",
    "reference_patches",
    "save_embedding_reducer",
    "save_reference",
    "scores_and_embeddings",
]
