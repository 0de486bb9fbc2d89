"""Per-patch description for monitoring: cheap image statistics, the score and a PCA-reduced embedding."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import joblib
import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from steelqc.data.errors import DataError
from steelqc.runtimes import ExportedModel

if TYPE_CHECKING:
    import keras

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
# A column darker than this on average is strip end / background, not steel.
_BLACK_COLUMN_MEAN = 16.0
# Canny hysteresis thresholds for "edge" pixels: steel grain stays below, defect borders and scratches above.
_CANNY_LOW, _CANNY_HIGH = 40, 120


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
