"""The reference set of a model version: its validation patches described, saved, logged with the version, read back."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from steelqc.config import PATCHES, STRIP, InferenceMode
from steelqc.monitoring.features import (
    EmbeddingRecorder,
    MonitoringDataError,
    fit_embedding_reducer,
    load_embedding_reducer,
    patch_features,
    patch_frame,
    save_embedding_reducer,
    scores_and_embeddings,
)
from steelqc.novelty import NOVEL_COLUMN, NOVELTY_COLUMN, NoveltyBank, NoveltyGuard

if TYPE_CHECKING:
    import keras

    from steelqc.config import PatchSettings
    from steelqc.data.dataset import Dataset

REFERENCE_FILE = "reference.parquet"
REDUCER_FILE = "embedding_reducer.joblib"
MONITORING_ARTIFACT_DIR = "monitoring"  # artefact folder of the registered model's run


def build_reference(
    model: keras.Model,
    patches: np.ndarray,
    *,
    n_components: int = 8,
    batch_size: int = 64,
    novelty: NoveltyBank | None = None,
) -> tuple[pd.DataFrame, PCA]:
    """The reference set of a patch-mode model version from its validation patches, with the PCA fitted on
    them; with a ``novelty`` bank also each patch's novelty and flag (the baseline of the novel share), from the
    same pass."""
    if novelty is None:
        scores, embeddings = scores_and_embeddings(model, patches, batch_size=batch_size)
        patch_novelty = None
    else:
        recorder = EmbeddingRecorder(model)
        scores, patch_novelty = NoveltyGuard(novelty).scores_and_novelty(recorder, patches, batch_size)
        embeddings = recorder.take()
    return reference_frame(patches, scores, embeddings, n_components=n_components, novelty=novelty,
                           patch_novelty=patch_novelty)  # fmt: skip


def reference_frame(
    patches: np.ndarray,
    scores: np.ndarray,
    embeddings: np.ndarray,
    *,
    n_components: int = 8,
    novelty: NoveltyBank | None = None,
    patch_novelty: np.ndarray | None = None,
) -> tuple[pd.DataFrame, PCA]:
    """The reference table of patches whose scores and embeddings are known (either inference mode)."""
    reducer = fit_embedding_reducer(embeddings, n_components)
    frame = patch_frame(patch_features(patches), scores, embeddings=embeddings, reducer=reducer)
    if novelty is not None and patch_novelty is not None:
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


def reference_rows(index: pd.DataFrame, *, split: str = "val", max_patches: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Up to ``max_patches`` index rows of ``split`` (seeded sample), grouped by image in first-seen order."""
    rows = index[index["split"] == split]
    if rows.empty:
        raise MonitoringDataError(f"the patch index has no {split!r} patches for a reference set")
    if len(rows) > max_patches:
        rows = rows.sample(max_patches, random_state=seed).sort_index()
    return pd.concat([group for _, group in rows.groupby("image_id", sort=False)])


def reference_patches(
    dataset: Dataset,
    index: pd.DataFrame,
    patch_settings: PatchSettings,
    *,
    split: str = "val",
    max_patches: int = 2000,
    seed: int = 0,
) -> np.ndarray:
    """The uint8 patches of :func:`reference_rows`, in their order."""
    from steelqc.patches import index_row_patches

    rows = reference_rows(index, split=split, max_patches=max_patches, seed=seed)
    return index_row_patches(dataset, rows, patch_settings)


def log_reference(
    model: keras.Model,
    dataset: Dataset,
    index: pd.DataFrame,
    patch_settings: PatchSettings,
    *,
    max_patches: int = 2000,
    n_components: int = 8,
    novelty: NoveltyBank | None = None,
    mode: InferenceMode = PATCHES,
    workers: int = 2,
) -> pd.DataFrame:
    """Build the reference set on the validation patches and log it to the *active* MLflow run.

    Scores, embeddings and novelty come from the model's inference ``mode``, as production's patch log will:
    a strip-mode model's reference is scored in strip mode. Call it in the run that logs the model (before
    registering): the version then carries its own reference and PCA under the ``monitoring/`` artefacts,
    which :func:`model_reference` reads back.
    """
    import tempfile

    import mlflow

    from steelqc.patches import index_row_patches

    rows = reference_rows(index, max_patches=max_patches)
    patches = index_row_patches(dataset, rows, patch_settings)
    if mode == STRIP:
        from steelqc.strip import keras_strip_model, strip_rows

        outputs = strip_rows(keras_strip_model(model), dataset.load_image, rows, patch_settings, workers=workers)
        patch_novelty = novelty.scores(outputs.features(novelty.layer)) if novelty is not None else None
        reference, reducer = reference_frame(patches, outputs.scores, outputs.embeddings, n_components=n_components,
                                             novelty=novelty, patch_novelty=patch_novelty)  # fmt: skip
    else:
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
