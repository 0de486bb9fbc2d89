"""Production monitoring: per-patch features, the date-partitioned patch log, and Evidently drift reports.

Every inspected patch is described by cheap image statistics (light, contrast, focus, texture, strip
border), the model score and a PCA-reduced penultimate-layer embedding. The same description computed
on the champion's validation patches is the *reference*; a production window is compared with it by
Evidently (``DataDriftPreset`` on the features and the score, ``EmbeddingsDrift`` on the embeddings),
so a changed light, a dirty lens or a defect look the model never saw shows up before recall drops.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import joblib
import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from threadpoolctl import threadpool_limits

from steelqc.config import MonitoringSettings
from steelqc.data.errors import DataError
from steelqc.data.storage import LocalStorage, S3Storage, open_storage
from steelqc.novelty import NOVEL_COLUMN, NOVELTY_COLUMN, NoveltyBank, NoveltyGuard, novelty_rise_reasons
from steelqc.runtimes import ExportedModel

if TYPE_CHECKING:
    import keras

    from steelqc.config import PatchSettings, Settings
    from steelqc.data.dataset import Dataset

FEATURE_COLUMNS: tuple[str, ...] = (
    "intensity_mean",
    "intensity_std",
    "contrast",
    "blur",
    "edge_density",
    "black_border_fraction",
)
SCORE_COLUMN = "score"
EMBEDDING_PREFIX = "emb_"
EMBEDDINGS_NAME = "embedding"
REFERENCE_FILE = "reference.parquet"
REDUCER_FILE = "embedding_reducer.joblib"
MONITORING_ARTIFACT_DIR = "monitoring"  # artefact folder of the registered model's run
PARTITION_PREFIX = "date="

# A column darker than this on average is strip end / background, not steel.
_BLACK_COLUMN_MEAN = 16.0
# Canny hysteresis thresholds for "edge" pixels: steel grain stays below, defect borders and scratches above.
_CANNY_LOW, _CANNY_HIGH = 40, 120
# Embeddings drift when more than this share of their PCA components drifted (Evidently's ratio default).
_EMBEDDING_DRIFTED_SHARE = 0.2


class MonitoringDataError(DataError):
    """A patch log or reference set that cannot be compared: empty, missing columns, unreadable."""


def patch_features(patches: np.ndarray) -> pd.DataFrame:
    """Image statistics of ``uint8 (N, S, S)`` patches, one row each, columns :data:`FEATURE_COLUMNS`.

    ``contrast`` is the 2nd–98th percentile spread (robust to a few hot pixels), ``blur`` the variance
    of the Laplacian (falls when the image goes out of focus), ``edge_density`` the share of Canny edge
    pixels, ``black_border_fraction`` the share of columns that are black (strip end).
    """
    if patches.ndim != 3 or patches.dtype != np.uint8:
        raise ValueError(f"patches must be uint8 (N, S, S), got {patches.dtype} {patches.shape}")
    if len(patches) == 0:
        return pd.DataFrame({name: pd.Series(dtype=np.float64) for name in FEATURE_COLUMNS})
    flat = patches.reshape(len(patches), patches.shape[1] * patches.shape[2]).astype(np.float32)
    low, high = np.percentile(flat, [2, 98], axis=1)
    blur = np.array([cv2.Laplacian(p, cv2.CV_32F).var() for p in patches], dtype=np.float64)
    edges = np.array([np.count_nonzero(cv2.Canny(p, _CANNY_LOW, _CANNY_HIGH)) / p.size for p in patches])
    black_border = (patches.mean(axis=1) < _BLACK_COLUMN_MEAN).mean(axis=1)
    return pd.DataFrame(
        {
            "intensity_mean": flat.mean(axis=1),
            "intensity_std": flat.std(axis=1),
            "contrast": high - low,
            "blur": blur,
            "edge_density": edges,
            "black_border_fraction": black_border,
        }
    ).astype(np.float64)


def fit_embedding_reducer(embeddings: np.ndarray, n_components: int = 8) -> PCA:
    """PCA fitted on the training-time (validation) embeddings; production embeddings are projected with it."""
    if embeddings.ndim != 2 or len(embeddings) < 2:
        raise ValueError(f"need a 2-D array of at least 2 embeddings, got shape {embeddings.shape}")
    components = min(n_components, embeddings.shape[0], embeddings.shape[1])
    return PCA(n_components=components, random_state=0).fit(embeddings.astype(np.float64))


def save_embedding_reducer(reducer: PCA, path: str | Path) -> Path:
    """Persist the reducer with joblib (scikit-learn's own persistence) so it travels with the model version."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(reducer, path)
    return path


def load_embedding_reducer(path: str | Path) -> PCA:
    """The reducer saved by :func:`save_embedding_reducer`."""
    reducer = joblib.load(Path(path))
    if not isinstance(reducer, PCA):
        raise MonitoringDataError(f"not a PCA embedding reducer: {type(reducer).__name__}", file=str(path))
    return reducer


def embedding_columns(frame: pd.DataFrame) -> list[str]:
    """The reduced-embedding columns of a patch frame, in component order."""
    cols = [c for c in frame.columns if c.startswith(EMBEDDING_PREFIX)]
    return sorted(cols, key=lambda c: int(c[len(EMBEDDING_PREFIX) :]))


def patch_frame(
    features: pd.DataFrame,
    scores: np.ndarray,
    *,
    embeddings: np.ndarray | None = None,
    reducer: PCA | None = None,
    images: Sequence[str] | None = None,
    positions: Sequence[tuple[int, int]] | None = None,
) -> pd.DataFrame:
    """One row per patch: [image, y, x,] score, the :func:`patch_features` and (when both given) the reduced embedding.

    Used for the production log and for the reference set, so both always have the same columns.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(features):
        raise ValueError(f"{len(features)} feature rows but {len(scores)} scores")
    frame = pd.DataFrame(index=pd.RangeIndex(len(features)))
    if images is not None:
        frame["image"] = list(images)
    if positions is not None:
        pos = np.asarray(positions, dtype=np.int64).reshape(-1, 2)
        frame["y"], frame["x"] = pos[:, 0], pos[:, 1]
    frame[SCORE_COLUMN] = scores
    frame = pd.concat([frame, features.reset_index(drop=True)], axis=1)
    if embeddings is not None and reducer is not None:
        reduced = reducer.transform(np.asarray(embeddings, dtype=np.float64).reshape(len(features), -1))
        for i in range(reduced.shape[1]):
            frame[f"{EMBEDDING_PREFIX}{i}"] = reduced[:, i]
    return frame


def scores_and_embeddings(
    model: keras.Model, patches: np.ndarray, *, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Scores and penultimate-layer embeddings of uint8 patches from one forward pass per batch."""
    from steelqc.inference import score_in_batches

    recorder = EmbeddingRecorder(model)
    return score_in_batches(recorder, patches, batch_size), recorder.take()


class EmbeddingRecorder:
    """Stands in for the Keras model (``predict_on_batch``): returns the scores, keeps the embeddings.

    Wrapping the model this way lets :class:`steelqc.inference.Inspector` make its decisions unchanged
    while the patch log gets the embeddings of the very same forward pass (no second pass).
    """

    def __init__(self, model: keras.Model | ExportedModel) -> None:
        import keras

        from steelqc.model import EMBEDDING_LAYER

        self.model = model
        if isinstance(model, ExportedModel):  # an exported graph already has both outputs
            self._predict_both = model.predict_both
        else:
            both = keras.Model(model.inputs, [model.outputs[0], model.get_layer(EMBEDDING_LAYER).output])
            self._predict_both = both.predict_on_batch
        self._embeddings: list[np.ndarray] = []

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        scores, embeddings = self._predict_both(x)
        self._embeddings.append(np.asarray(embeddings))
        return np.asarray(scores)

    def record(self, embeddings: np.ndarray) -> None:
        """Keep embeddings computed by another recorder of the same pass (the novelty guard's)."""
        self._embeddings.append(np.asarray(embeddings))

    def take(self) -> np.ndarray:
        """The embeddings recorded since the last call, in patch order."""
        taken = np.concatenate(self._embeddings) if self._embeddings else np.empty((0, 0))
        self._embeddings = []
        return taken


def build_reference(
    model: keras.Model,
    patches: np.ndarray,
    *,
    n_components: int = 8,
    batch_size: int = 64,
    novelty: NoveltyBank | None = None,
) -> tuple[pd.DataFrame, PCA]:
    """The reference set of a model version from its validation patches, with the PCA fitted on them; with a
    ``novelty`` bank also each patch's novelty and flag (the baseline of the novel share), from the same pass."""
    if novelty is None:
        scores, embeddings = scores_and_embeddings(model, patches, batch_size=batch_size)
    else:
        recorder = EmbeddingRecorder(model)
        scores, patch_novelty = NoveltyGuard(novelty).scores_and_novelty(recorder, patches, batch_size)
        embeddings = recorder.take()
    reducer = fit_embedding_reducer(embeddings, n_components)
    frame = patch_frame(patch_features(patches), scores, embeddings=embeddings, reducer=reducer)
    if novelty is not None:
        frame[NOVELTY_COLUMN], frame[NOVEL_COLUMN] = patch_novelty, patch_novelty > novelty.threshold
    return frame, reducer


def save_reference(reference: pd.DataFrame, reducer: PCA | None, out_dir: str | Path) -> Path:
    """Write the reference set (and its reducer) into ``out_dir``, the folder logged with the model version."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reference.to_parquet(out / REFERENCE_FILE, index=False)
    if reducer is not None:
        save_embedding_reducer(reducer, out / REDUCER_FILE)
    return out


def load_reference(folder: str | Path) -> tuple[pd.DataFrame, PCA | None]:
    """The reference set and reducer written by :func:`save_reference` (reducer None when absent)."""
    folder = Path(folder)
    path = folder / REFERENCE_FILE
    if not path.is_file():
        raise MonitoringDataError("reference set missing (was the model registered with one?)", file=str(path))
    reducer_path = folder / REDUCER_FILE
    reducer = load_embedding_reducer(reducer_path) if reducer_path.is_file() else None
    return pd.read_parquet(path), reducer


class PatchLog:
    """Append-only, date-partitioned parquet log of production patches (``date=YYYY-MM-DD/part-*.parquet``).

    The root is a local folder or an ``s3://bucket/prefix`` (boto3; ``endpoint_url`` or the ``AWS_*``
    variables point it at MinIO/moto). Each append is its own file, so concurrent writers never collide.
    """

    def __init__(self, root: str | Path, endpoint_url: str | None = None) -> None:
        self.storage = open_storage(root, endpoint_url=endpoint_url)
        self.uri = self.storage.uri

    def append(self, frame: pd.DataFrame, *, now: datetime | None = None) -> str | None:
        """Write ``frame`` with a ``logged_at`` column into today's partition; the file's URI (None if empty)."""
        if frame.empty:
            return None
        stamp = (now or datetime.now(UTC)).astimezone(UTC)
        rows = frame.assign(logged_at=pd.Timestamp(stamp))
        buffer = io.BytesIO()
        rows.to_parquet(buffer, index=False)
        relpath = f"{PARTITION_PREFIX}{stamp.date().isoformat()}/part-{stamp:%H%M%S}-{uuid.uuid4().hex[:12]}.parquet"
        self.storage.write_bytes(relpath, buffer.getvalue())
        return f"{self.uri}/{relpath}"

    def partitions(self) -> list[date]:
        """Dates that have a partition, oldest first."""
        names: list[str]
        if isinstance(self.storage, LocalStorage):
            root = self.storage.root
            names = [e.name for e in os.scandir(root) if e.is_dir()] if root.is_dir() else []
        elif isinstance(self.storage, S3Storage):
            names = self._s3_folders(self.storage)
        else:  # pragma: no cover - open_storage only returns the two kinds above
            raise TypeError(type(self.storage).__name__)
        dates = []
        for name in names:
            try:
                if not name.startswith(PARTITION_PREFIX):
                    raise ValueError(name)
                dates.append(date.fromisoformat(name[len(PARTITION_PREFIX) :]))
            except ValueError:
                raise MonitoringDataError(
                    "not a date partition (expected date=YYYY-MM-DD) in the patch log", file=f"{self.uri}/{name}"
                ) from None
        return sorted(dates)

    @staticmethod
    def _s3_folders(storage: S3Storage) -> list[str]:
        prefix = f"{storage.prefix}/" if storage.prefix else ""
        folders: list[str] = []
        pages = storage.client.get_paginator("list_objects_v2").paginate(
            Bucket=storage.bucket, Prefix=prefix, Delimiter="/"
        )
        try:
            for page in pages:
                folders.extend(p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", []))
        except storage.client.exceptions.NoSuchBucket:
            raise MonitoringDataError(f"bucket {storage.bucket!r} does not exist", file=storage.uri) from None
        return folders

    def read(self, since: date | None = None, until: date | None = None) -> pd.DataFrame:
        """All rows logged on days ``since``..``until`` (inclusive); an empty frame when there are none."""
        frames = []
        for day in self.partitions():
            if (since and day < since) or (until and day > until):
                continue
            folder = f"{PARTITION_PREFIX}{day.isoformat()}"
            for name in self.storage.list_files(folder):
                relpath = f"{folder}/{name}"
                if not name.endswith(".parquet"):
                    raise MonitoringDataError("not a parquet file in the patch log", file=f"{self.uri}/{relpath}")
                try:
                    frames.append(pd.read_parquet(io.BytesIO(self.storage.read_bytes(relpath))))
                except (OSError, ValueError) as exc:
                    raise MonitoringDataError(f"unreadable parquet: {exc}", file=f"{self.uri}/{relpath}") from exc
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


@dataclass
class DriftResult:
    """What the drift report found; ``summary()`` is the JSON written beside the HTML report."""

    drift_detected: bool
    drifted_share: float
    drift_share_threshold: float
    drifted_columns: list[str]
    feature_scores: dict[str, float]
    feature_methods: dict[str, str]
    score_drift: bool
    score_drift_score: float
    embedding_drift: bool | None
    embedding_drift_score: float | None
    n_reference: int
    n_current: int
    html_path: Path
    json_path: Path
    reasons: list[str] = field(default_factory=list)  # why drift was declared; empty when it was not
    novel_share_by_day: dict[str, float] = field(default_factory=dict)  # novelty guard: share of novel patches
    notes: list[str] = field(default_factory=list)  # caveats, e.g. embeddings not compared

    def summary(self) -> dict[str, object]:
        data = asdict(self)
        data["html_path"], data["json_path"] = str(self.html_path), str(self.json_path)
        return data

    def metrics(self) -> dict[str, float]:
        """Flat numeric metrics for MLflow."""
        metrics = {
            "drift_detected": float(self.drift_detected),
            "drifted_share": self.drifted_share,
            "score_drift": float(self.score_drift),
            "score_drift_score": self.score_drift_score,
            "n_reference": float(self.n_reference),
            "n_current": float(self.n_current),
        }
        metrics.update({f"drift_score_{k}": v for k, v in self.feature_scores.items()})
        if self.novel_share_by_day:
            metrics["novel_share_max_day"] = max(self.novel_share_by_day.values())
        if self.embedding_drift_score is not None:
            metrics["embedding_drift_score"] = self.embedding_drift_score
            metrics["embedding_drift"] = float(bool(self.embedding_drift))
        return metrics


def _check_columns(frame: pd.DataFrame, name: str) -> None:
    if frame.empty:
        raise MonitoringDataError(f"{name} has no rows", file=name)
    missing = [c for c in (SCORE_COLUMN, *FEATURE_COLUMNS) if c not in frame.columns]
    if missing:
        raise MonitoringDataError(f"{name} lacks columns {missing}", file=name)


def drift_report(
    reference: pd.DataFrame, current: pd.DataFrame, out_dir: str | Path, settings: MonitoringSettings
) -> DriftResult:
    """Compare a production window with the reference; write ``drift_report.html`` and ``drift_summary.json``.

    Drift is detected when the share of drifted columns (features and score, each judged by
    ``settings.drift_method`` at ``settings.drift_threshold``) reaches ``settings.drift_share``, or when
    more than 20% of the embedding's PCA components drifted by the same test (Evidently's ratio method).
    The default test is an effect size (Wasserstein distance in reference standard deviations), not a
    p-value, and the embeddings are not judged by a classifier: patches of one strip are correlated, so
    both flag ordinary strip-to-strip variation of a small window as drift. Embeddings are compared only
    when both frames carry the same reduced components.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift
    from evidently.metrics.embeddings import RatioDriftMethod
    from evidently.presets import DataDriftPreset

    _check_columns(reference, "reference set")
    _check_columns(current, "production patch log")
    columns = [*FEATURE_COLUMNS, SCORE_COLUMN]
    emb_cols = embedding_columns(reference)
    use_embeddings = len(emb_cols) >= 2 and emb_cols == embedding_columns(current)
    notes = [] if use_embeddings else ["embeddings not compared: absent or different components in the two sets"]
    keep = columns + (emb_cols if use_embeddings else [])
    definition = DataDefinition(
        numerical_columns=keep, embeddings={EMBEDDINGS_NAME: emb_cols} if use_embeddings else None
    )
    metrics: list[object] = [
        DataDriftPreset(
            columns=columns,
            drift_share=settings.drift_share,
            method=settings.drift_method,
            threshold=settings.drift_threshold,
        )
    ]
    if use_embeddings:
        metrics.append(
            EmbeddingsDrift(
                embeddings_name=EMBEDDINGS_NAME,
                drift_method=RatioDriftMethod(
                    component_stattest=settings.drift_method,
                    component_stattest_threshold=settings.drift_threshold,
                    threshold=_EMBEDDING_DRIFTED_SHARE,
                ),
            )
        )
    # Evidently plots embeddings with scikit-learn's t-SNE, whose OpenMP threads spin against each other
    # on a busy machine (22 s instead of 2 s for 200 rows on 2 shared cores); one thread is the fast path.
    with threadpool_limits(limits=1):
        snapshot = Report(metrics, include_tests=True).run(
            current_data=Dataset.from_pandas(current[keep].astype(np.float64), data_definition=definition),
            reference_data=Dataset.from_pandas(reference[keep].astype(np.float64), data_definition=definition),
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    html_path, json_path = out / "drift_report.html", out / "drift_summary.json"
    snapshot.save_html(str(html_path))
    result = _summarise(snapshot.dict(), settings.drift_share, len(reference), len(current), html_path, json_path)
    result.notes = notes
    result.novel_share_by_day, novelty_reasons = novelty_rise_reasons(reference, current, settings.novel_share_rise)
    result.reasons += novelty_reasons
    result.drift_detected = result.drift_detected or bool(novelty_reasons)
    json_path.write_text(json.dumps(result.summary(), indent=2))
    return result


def _summarise(
    report: dict, drift_share: float, n_reference: int, n_current: int, html_path: Path, json_path: Path
) -> DriftResult:
    """Read Evidently's snapshot dict: per-column scores from ``ValueDrift``, verdicts from its tests."""
    scores: dict[str, float] = {}
    methods: dict[str, str] = {}
    share = 0.0
    embedding_score: float | None = None
    for metric in report["metrics"]:
        config = metric["config"]
        kind = config["type"].rsplit(":", 1)[-1]
        if kind == "ValueDrift":
            scores[config["column"]] = float(metric["value"])
            methods[config["column"]] = str(config.get("method"))
        elif kind == "DriftedColumnsCount":
            share = float(metric["value"]["share"])
        elif kind == "EmbeddingsDrift":
            embedding_score = float(metric["value"])
    drifted = sorted(
        test["metric_config"]["params"]["column"]
        for test in report.get("tests", [])
        if test["metric_config"]["params"]["type"].endswith("ValueDrift") and test["status"] == "FAIL"
    )
    embedding_drift = None if embedding_score is None else embedding_score > _EMBEDDING_DRIFTED_SHARE
    reasons = []
    if share >= drift_share:
        reasons.append(f"{share:.0%} of columns drifted (threshold {drift_share:.0%}): {', '.join(drifted)}")
    if embedding_drift:
        reasons.append(
            f"{embedding_score:.0%} of embedding components drifted (threshold {_EMBEDDING_DRIFTED_SHARE:.0%})"
        )
    return DriftResult(
        drift_detected=share >= drift_share or bool(embedding_drift),
        drifted_share=share,
        drift_share_threshold=drift_share,
        drifted_columns=drifted,
        feature_scores={k: v for k, v in scores.items() if k != SCORE_COLUMN},
        feature_methods=methods,
        score_drift=SCORE_COLUMN in drifted,
        score_drift_score=scores.get(SCORE_COLUMN, float("nan")),
        embedding_drift=embedding_drift,
        embedding_drift_score=embedding_score,
        n_reference=n_reference,
        n_current=n_current,
        html_path=html_path,
        json_path=json_path,
        reasons=reasons,
    )


# --- the reference set travels with the model version (MLflow artefacts of its run) -------------------


def reference_patches(
    dataset: Dataset,
    index: pd.DataFrame,
    patch_settings: PatchSettings,
    *,
    split: str = "val",
    max_patches: int = 2000,
    seed: int = 0,
) -> np.ndarray:
    """Up to ``max_patches`` uint8 patches of ``split`` from a patch index (seeded sample, index order)."""
    from steelqc.patches import slice_patches

    rows = index[index["split"] == split]
    if rows.empty:
        raise MonitoringDataError(f"the patch index has no {split!r} patches for a reference set")
    if len(rows) > max_patches:
        rows = rows.sample(max_patches, random_state=seed).sort_index()
    patches = [
        slice_patches(dataset.load_image(str(image_id)), list(zip(group["y"], group["x"], strict=True)),
                      patch_settings.size, patch_settings.pad_mode)  # fmt: skip
        for image_id, group in rows.groupby("image_id", sort=False)
    ]
    return np.concatenate(patches)


def log_reference(
    model: keras.Model,
    dataset: Dataset,
    index: pd.DataFrame,
    patch_settings: PatchSettings,
    *,
    max_patches: int = 2000,
    n_components: int = 8,
    novelty: NoveltyBank | None = None,
) -> pd.DataFrame:
    """Build the reference set on the validation patches and log it to the *active* MLflow run.

    Call it in the run that logs the model (before registering): the version then carries its own
    reference and PCA under the ``monitoring/`` artefacts, which :func:`model_reference` reads back.
    """
    import tempfile

    import mlflow

    patches = reference_patches(dataset, index, patch_settings, max_patches=max_patches)
    reference, reducer = build_reference(model, patches, n_components=n_components, novelty=novelty)
    with tempfile.TemporaryDirectory(prefix="steelqc-reference-") as tmp:
        mlflow.log_artifacts(str(save_reference(reference, reducer, tmp)), MONITORING_ARTIFACT_DIR)
    return reference


def model_reference(run_id: str, folder: str | Path | None = None) -> tuple[pd.DataFrame, PCA | None]:
    """The reference set and reducer to compare with: the one saved in ``folder`` when given, else the one
    logged with the model's run (:func:`log_reference`), read into memory from a temporary download."""
    import tempfile

    import mlflow
    from mlflow.exceptions import MlflowException

    if folder is not None:
        return load_reference(folder)
    with tempfile.TemporaryDirectory(prefix="steelqc-reference-") as tmp:
        try:
            downloaded = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=MONITORING_ARTIFACT_DIR, dst_path=tmp
            )
        except (MlflowException, OSError) as exc:
            raise MonitoringDataError(
                f"no reference set logged with run {run_id} ({type(exc).__name__}); the model was registered "
                "without monitoring.log_reference - pass a reference folder instead",
                file=f"runs:/{run_id}/{MONITORING_ARTIFACT_DIR}",
            ) from exc
        return load_reference(downloaded)


def log_drift_run(settings: Settings, result: DriftResult, params: dict[str, str]) -> str:
    """Record one drift check in the ``<prefix>-monitoring`` MLflow experiment; the run id."""
    import mlflow

    from steelqc.registry import ensure_experiment

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


def patch_log_of(settings: Settings) -> PatchLog:
    """The production patch log configured by ``monitoring.log_dir`` (default ``<state>/patch-log``)."""
    return PatchLog(
        settings.monitoring.log_dir or settings.state_dir / "patch-log", endpoint_url=settings.data.s3_endpoint_url
    )


def read_window(
    log: PatchLog, since: date | None, until: date | None, model_version: str | None
) -> tuple[pd.DataFrame, int]:
    """Rows logged ``since``..``until`` by ``model_version`` (all versions when None) and how many others were left out.

    Scores and embeddings of another model version are not comparable with this version's reference.
    """
    rows = log.read(since, until)
    if model_version is None or rows.empty or "model_version" not in rows.columns:
        return rows, 0
    mine = rows["model_version"].astype(str) == str(model_version)
    return rows[mine].reset_index(drop=True), int((~mine).sum())
