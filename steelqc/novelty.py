"""Novel-defect guard: a nearest-neighbour novelty score beside the classifier, so an unseen defect type is held.

A supervised classifier only recognises the defect types it was trained on. The guard keeps a memory bank of
embeddings of clean *training* patches (a greedy coreset or a random subsample of them); a patch's novelty is
its mean distance to the ``k`` nearest bank entries (with ``k = 1``, 0 for a patch that is in the bank). The
threshold comes from clean *validation* images for a false-alarm budget, with a Clopper–Pearson bound on the
clean HOLD rate; a patch above it is at least HOLD, with the reason :data:`NOVEL_PATTERN`.

The embeddings are taken from the forward pass that scores the patches (no second backbone run). A bank belongs
to one inference mode: in strip mode it is built and calibrated from strip-mode window features (the windows'
pooled backbone features or head embeddings), the features production will see.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.metrics import pairwise_distances
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

from steelqc.config import PATCHES, STRIP, InferenceMode, NoveltySettings
from steelqc.thresholds import HOLD, PASS, recall_lower_bound

if TYPE_CHECKING:
    from steelqc.config import PatchSettings
    from steelqc.data.dataset import Dataset
    from steelqc.strip import ScoredStrip

NOVEL_PATTERN = "novel pattern"
BANK_FILE = "novelty_bank.npz"
NOVELTY_ARTIFACT = "novelty_bank"  # the pyfunc artefact key; the bank loads with the model
NOVELTY_COLUMN, NOVEL_COLUMN = "novelty", "novel"  # patch log and reference columns: the score and the flag


@dataclass(frozen=True)
class NoveltyCalibration:
    """The novelty threshold and the clean-validation evidence behind it.

    ``hold_rate`` is the share of clean validation images with a patch above ``threshold``; ``hold_rate_bound``
    its one-sided Clopper–Pearson upper bound at ``confidence`` (equal to ``hold_rate`` without a confidence).
    """

    threshold: float
    budget: float
    hold_rate: float
    hold_rate_bound: float
    confidence: float | None
    n_clean_images: int
    bound_met: bool
    note: str


def hold_rate_upper_bound(held: int, n: int, confidence: float | None) -> float:
    """One-sided Clopper–Pearson upper bound of a rate ``held / n``: 1 − the lower bound of the kept share."""
    if confidence is None:
        return held / n
    return 1.0 - recall_lower_bound(n - held, n, confidence)


def calibrate(
    clean_image_scores: np.ndarray, budget: float, confidence: float | None, *, prove: bool = False
) -> NoveltyCalibration:
    """The lowest threshold whose clean HOLD rate (image max novelty > threshold) is within ``budget``.

    By default the *observed* rate must be within budget and its Clopper–Pearson upper bound is reported
    (``bound_met`` says whether it is within budget too). With ``prove`` the bound itself must be, as for
    ``t_pass``: fewer false alarms, but on a hundred clean images that means the highest clean score and a
    guard that catches less; with too few images to prove it, the observed rule applies and the note says so.
    """
    scores = np.sort(np.asarray(clean_image_scores, dtype=np.float64).ravel())[::-1]
    n = len(scores)
    if n == 0:
        raise ValueError("no clean validation images to calibrate the novelty threshold on")
    if not np.all(np.isfinite(scores)):
        raise ValueError("novelty scores contain non-finite values")
    # Holding the h highest-scoring images means threshold = the (h+1)-th highest score (strict ">" holds ≤ h).
    allowed = min(int(np.floor(budget * n)), n - 1)
    proven = [h for h in range(allowed + 1) if hold_rate_upper_bound(h, n, confidence) <= budget]
    held = max(proven) if prove and proven else allowed
    threshold = float(scores[held])
    actual = int(np.sum(scores > threshold))
    bound = hold_rate_upper_bound(actual, n, confidence)
    bound_met = bound <= budget
    level = f" at {confidence:.0%} confidence" if confidence is not None else ""
    if bound_met:
        note = f"clean HOLD rate {actual / n:.1%}, ≤ {budget:.1%}{level} with {n} clean validation images"
    else:
        needed = int(np.ceil(np.log(1.0 - confidence) / np.log(1.0 - budget))) if confidence is not None else n
        note = (
            f"clean HOLD rate {actual / n:.1%} on {n} clean validation images, upper bound {bound:.1%}{level}: "
            f"proving ≤ {budget:.1%} needs a lower observed rate or more clean images (at least {needed} "
            "with none held)"
        )
    return NoveltyCalibration(threshold, budget, actual / n, bound, confidence, n, bound_met, note)


def greedy_coreset(embeddings: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Indices of ``size`` rows chosen by greedy k-centre: each pick is the row farthest from those chosen.

    The bank then covers the spread of clean appearance (rare clean looks too), not just its dense middle.
    """
    if size >= len(embeddings):
        return np.arange(len(embeddings))
    chosen = [int(np.random.default_rng(seed).integers(len(embeddings)))]
    with threadpool_limits(limits=1):
        nearest = pairwise_distances(embeddings, embeddings[chosen]).ravel()
        for _ in range(size - 1):
            pick = int(np.argmax(nearest))
            chosen.append(pick)
            np.minimum(nearest, pairwise_distances(embeddings, embeddings[pick : pick + 1]).ravel(), out=nearest)
    return np.asarray(chosen)


class NoveltyBank:
    """Embeddings of clean training patches, searched with scikit-learn's exact nearest neighbours."""

    def __init__(
        self,
        embeddings: np.ndarray,
        *,
        layer: str,
        k: int = 1,
        calibration: NoveltyCalibration | None = None,
        info: dict[str, Any] | None = None,
        mode: InferenceMode = PATCHES,
    ) -> None:
        if embeddings.ndim != 2 or len(embeddings) == 0:
            raise ValueError(f"a novelty bank needs a non-empty 2-D array of embeddings, got {embeddings.shape}")
        if not 1 <= k <= len(embeddings):
            raise ValueError(f"k={k} must be between 1 and the bank size {len(embeddings)}")
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.layer = layer
        self.mode = mode  # the inference mode whose features it holds and was calibrated on
        self.k = k
        self.calibration = calibration
        self.info = dict(info or {})  # how the bank was built: source patches, method, build seconds
        self._index = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(self.embeddings)

    def __len__(self) -> int:
        return len(self.embeddings)

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """Novelty of each embedding: mean distance to its ``k`` nearest bank entries (float64 ``(N,)``)."""
        queries = np.asarray(embeddings, dtype=np.float32).reshape(len(embeddings), -1)
        if len(queries) == 0:
            return np.empty(0, np.float64)
        # One BLAS thread: with the backbone's threads around, more spin against each other (1000 × 1280 bank,
        # 64 patches: 21 ms on one thread vs 220 ms on all, 2 shared cores at load 5.5).
        with threadpool_limits(limits=1):
            _, nearest = self._index.kneighbors(queries)
        # The search's ||a||² − 2ab + ||b||² shortcut leaves ~1e-6 for identical rows; the k distances are
        # recomputed from differences, so a banked patch scores exactly 0.
        differences = queries[:, None, :].astype(np.float64) - self.embeddings[nearest].astype(np.float64)
        return np.linalg.norm(differences, axis=2).mean(axis=1)

    @property
    def threshold(self) -> float:
        if self.calibration is None:
            raise ValueError("the novelty bank is not calibrated")
        return self.calibration.threshold

    def summary(self) -> dict[str, Any]:
        """Size, build record and calibration, flat, for MLflow and the README."""
        calibration = asdict(self.calibration) if self.calibration else {}
        return {"bank_size": len(self), "layer": self.layer, "mode": self.mode, "k": self.k, **self.info, **calibration}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"layer": self.layer, "mode": self.mode, "k": self.k, "info": self.info,
                "calibration": asdict(self.calibration) if self.calibration else None}  # fmt: skip
        np.savez(path, embeddings=self.embeddings, meta=np.array(json.dumps(meta)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> NoveltyBank:
        with np.load(Path(path), allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            embeddings = data["embeddings"]
        calibration = NoveltyCalibration(**meta["calibration"]) if meta["calibration"] else None
        return cls(embeddings, layer=meta["layer"], k=meta["k"], calibration=calibration, info=meta["info"],
                   mode=meta.get("mode", PATCHES))  # fmt: skip


def build_bank(embeddings: np.ndarray, settings: NoveltySettings, mode: InferenceMode = PATCHES) -> NoveltyBank:
    """A bank of at most ``settings.bank_size`` of these clean training embeddings; size and build time recorded."""
    started = time.perf_counter()
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if settings.subsample == "coreset":
        keep = greedy_coreset(embeddings, settings.bank_size, settings.seed)
    else:
        rng = np.random.default_rng(settings.seed)
        keep = np.sort(rng.choice(len(embeddings), min(settings.bank_size, len(embeddings)), replace=False))
    info = {"n_source_patches": len(embeddings), "subsample": settings.subsample}
    bank = NoveltyBank(embeddings[keep], layer=settings.layer, k=min(settings.k, len(keep)), info=info, mode=mode)
    bank.info["build_seconds"] = round(time.perf_counter() - started, 3)
    return bank


def guard_decisions(decisions: np.ndarray, novelty: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Per patch: the classifier's decision raised to at least HOLD where novelty exceeds the threshold.

    Returns the decisions and the mask of novel patches (the ``novel pattern`` reason).
    """
    novel = np.asarray(novelty, dtype=np.float64) > threshold
    return np.where(novel & (np.asarray(decisions) == PASS), HOLD, decisions), novel


def novelty_runs_on_export(bank_path: str | Path) -> bool:
    """Whether an exported runtime can feed this bank: a patch-mode export has two outputs (score and embedding);
    a strip-mode export gives the feature map, from which both the pooled features and the head's embeddings are
    computed anyway."""
    from steelqc.model import EMBEDDING_LAYER

    bank = NoveltyBank.load(bank_path)
    return bank.mode == STRIP or bank.layer == EMBEDDING_LAYER


def outline_novel(
    overlay: np.ndarray, positions: Sequence[tuple[int, int]], novel: np.ndarray, patch_size: int
) -> None:
    """Frame the novel patches of an overlay in magenta (same in RGB and BGR), inset so the worst-patch frame
    stays visible."""
    import cv2

    height, width = overlay.shape[:2]
    for (y, x), flagged in zip(positions, novel, strict=True):
        if flagged:
            corner = (min(x + patch_size, width) - 4, min(y + patch_size, height) - 4)
            cv2.rectangle(overlay, (x + 3, y + 3), corner, (255, 0, 255), 2)


# --- recording the guard's layer in the scoring pass -----------------------------------------------------


class NoveltyRecorder:
    """Stands in for the model (``predict_on_batch``): returns scores, keeps the bank layer's features.

    Wrapping monitoring's :class:`~steelqc.monitoring.EmbeddingRecorder` is allowed: the wrapped recorder
    still gets its embeddings, from the same single forward pass.
    """

    def __init__(self, model: Any, layer: str) -> None:
        from steelqc.model import EMBEDDING_LAYER
        from steelqc.monitoring import EmbeddingRecorder
        from steelqc.runtimes import ExportedModel

        self._shared = model if isinstance(model, EmbeddingRecorder) else None
        base = self._shared.model if self._shared is not None else model
        self._features: list[np.ndarray] = []
        if isinstance(base, ExportedModel):  # an exported graph has two outputs: score and embedding
            if layer != EMBEDDING_LAYER:
                raise ValueError(f"an exported runtime has no {layer!r} output for the novelty bank")
            self._predict = lambda x: (*base.predict_both(x), None)
        else:
            import keras

            outputs = [base.outputs[0], base.get_layer(layer).output, base.get_layer(EMBEDDING_LAYER).output]
            both = keras.Model(base.inputs, outputs)
            self._predict = both.predict_on_batch

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        scores, features, embeddings = self._predict(x)
        self._features.append(np.asarray(features).reshape(len(x), -1))
        if self._shared is not None:
            self._shared.record(np.asarray(features if embeddings is None else embeddings))
        return np.asarray(scores)

    def take(self) -> np.ndarray:
        taken = np.concatenate(self._features) if self._features else np.empty((0, 0))
        self._features = []
        return taken


class NoveltyGuard:
    """A calibrated bank applied at inference: classifier scores and novelty from one forward pass."""

    def __init__(self, bank: NoveltyBank) -> None:
        self.bank = bank
        self.threshold = bank.threshold
        self._recorder: tuple[Any, NoveltyRecorder] | None = None  # (the model it wraps, the recorder)

    def scores_and_novelty(self, model: Any, patches: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Classifier scores and novelty of uint8 patches ``(N, S, S)``."""
        from steelqc.inference import score_in_batches

        if self._recorder is None or self._recorder[0] is not model:  # building it costs ~1 s: once per model
            self._recorder = (model, NoveltyRecorder(model, self.bank.layer))
        recorder = self._recorder[1]
        scores = score_in_batches(recorder, patches, batch_size)
        return scores, self.bank.scores(recorder.take())

    def strip_novelty(self, scored: Sequence[ScoredStrip]) -> np.ndarray:
        """Novelty of every window of strip-mode results, in their order (the features are already computed)."""
        if not scored:
            return np.empty(0, np.float64)
        return self.bank.scores(np.concatenate([result.features(self.bank.layer) for result in scored]))


# --- building and calibrating from a patch index ---------------------------------------------------------


def clean_training_rows(index: pd.DataFrame, settings: NoveltySettings, *, whole_images: bool = False) -> pd.DataFrame:
    """Up to ``settings.source_patches`` clean (label 0) training patches, a seeded sample in index order.

    ``whole_images`` (strip mode, where every window of a scored image comes at no extra cost) samples images
    instead, and takes all clean patches of each until the count is reached.
    """
    rows = index[(index["split"] == "train") & (index["label"] == 0)]
    if rows.empty:
        raise ValueError("the patch index has no clean training patches for a novelty bank")
    if len(rows) <= settings.source_patches:
        return rows
    if not whole_images:
        return rows.sample(settings.source_patches, random_state=settings.seed).sort_index()
    images = pd.Series(rows["image_id"].unique()).sample(frac=1.0, random_state=settings.seed)
    per_image = rows.groupby("image_id", sort=False).size().loc[images.to_numpy()]
    keep = per_image.index[: int(np.searchsorted(per_image.cumsum().to_numpy(), settings.source_patches)) + 1]
    return rows[rows["image_id"].isin(keep)]


def clean_validation_rows(index: pd.DataFrame) -> pd.DataFrame:
    """Every patch of the validation images that have no defect patch at all (the clean images)."""
    val = index[index["split"] == "val"]
    defective = val.groupby("image_id")["label"].transform("max") > 0
    return val[~defective]


def image_maxima(values: np.ndarray, image_ids: Sequence[object]) -> np.ndarray:
    """Per image (in first-seen order) the highest value of its patches."""
    per_patch = pd.Series(np.asarray(values, dtype=np.float64))
    return per_patch.groupby(pd.Index(list(image_ids)), sort=False).max().to_numpy()


def fit_guard(
    model: Any,
    dataset: Dataset,
    index: pd.DataFrame,
    patch_settings: PatchSettings,
    settings: NoveltySettings,
    *,
    mode: InferenceMode = PATCHES,
    workers: int = 2,
) -> NoveltyBank:
    """Bank from clean training patches, threshold from clean validation images, both embedded by ``model`` in
    its inference ``mode``."""
    embed = _window_features(model, dataset, patch_settings, settings.layer, mode, workers)
    bank = build_bank(embed(clean_training_rows(index, settings, whole_images=mode == STRIP)), settings, mode)
    clean_val = clean_validation_rows(index)
    ordered = pd.concat([group for _, group in clean_val.groupby("image_id", sort=False)])
    novelty = bank.scores(embed(ordered))
    bank.calibration = calibrate(
        image_maxima(novelty, ordered["image_id"].tolist()),
        settings.max_clean_hold_rate,
        settings.confidence,
        prove=settings.prove_budget,
    )
    bank.info["clean_val_patch_novel_share"] = float(np.mean(novelty > bank.threshold))
    return bank


def _window_features(
    model: Any, dataset: Dataset, patch_settings: PatchSettings, layer: str, mode: InferenceMode, workers: int
) -> Callable[[pd.DataFrame], np.ndarray]:
    """Features of ``layer`` for patch-index rows grouped by image (in their order), computed the way ``mode``
    scores."""
    if mode == STRIP:
        from steelqc.strip import keras_strip_model, strip_rows

        strip = keras_strip_model(model)
        return lambda rows: strip_rows(strip, dataset.load_image, rows, patch_settings, workers=workers).features(layer)
    from steelqc.inference import score_in_batches
    from steelqc.patches import index_row_patches

    recorder = NoveltyRecorder(model, layer)

    def embed(rows: pd.DataFrame) -> np.ndarray:
        score_in_batches(recorder, index_row_patches(dataset, rows, patch_settings), 64)
        return recorder.take()

    return embed


# --- monitoring: the share of novel patches per day -----------------------------------------------------


def novel_share_by_day(frame: pd.DataFrame) -> pd.DataFrame:
    """Per day logged (``logged_at``): patches, novel patches and their share; rows without a guard left out."""
    flagged = frame.dropna(subset=[NOVEL_COLUMN])
    days = pd.to_datetime(flagged["logged_at"], utc=True).dt.date
    grouped = flagged[NOVEL_COLUMN].astype(bool).groupby(days)
    per_day = pd.DataFrame({"patches": grouped.size(), "novel": grouped.sum()})
    return per_day.assign(share=per_day["novel"] / per_day["patches"])


def novelty_rise_reasons(
    reference: pd.DataFrame, current: pd.DataFrame, rise: float, confidence: float = 0.95
) -> tuple[dict[str, float], list[str]]:
    """Share of novel patches per day of ``current`` and a drift reason for each day whose share is, at
    ``confidence`` (Clopper–Pearson lower bound), more than ``rise`` times the reference's share.

    Both frames need the ``novel`` column (written when the model carries a guard); otherwise nothing is judged.
    """
    if NOVEL_COLUMN not in reference.columns or NOVEL_COLUMN not in current.columns or reference.empty:
        return {}, []
    per_day = novel_share_by_day(current)
    # a reference without a single novel patch still allows one in its size, or any novel patch would be a rise
    baseline = max(float(reference[NOVEL_COLUMN].astype(bool).mean()), 1.0 / len(reference))
    reasons = []
    for day, row in per_day.iterrows():
        bound = recall_lower_bound(int(row["novel"]), int(row["patches"]), confidence)
        if bound > rise * baseline:
            reasons.append(
                f"novel patches rose to {row['share']:.1%} on {day} ({int(row['novel'])} of {int(row['patches'])}; "
                f"lower bound {bound:.1%} > {rise:g} x the reference's {baseline:.1%})"
            )
    return {str(day): float(share) for day, share in per_day["share"].items()}, reasons
