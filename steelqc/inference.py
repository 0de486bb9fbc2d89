"""Whole images in, one decision per image out: the single inference path of the pyfunc, the CLI and the app.

Patches of many images go through the model together, in batches, because one ``predict`` per image is
what made the seed system slow (3.5 vs 4.5 images/s on these 2 cores); in strip mode (:mod:`steelqc.strip`)
the backbone sees each whole image once instead. Patching and preprocessing reuse
the training code (``extract_patches``, ``preprocess_patches``), so what the model sees at inference is
exactly what it saw in evaluation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, cast

import cv2
import numpy as np

from steelqc.config import PATCHES, STRIP, InferenceMode
from steelqc.data.errors import ImageDecodeError
from steelqc.data.images import decode_image_bytes
from steelqc.model import preprocess_patches
from steelqc.patches import PadMode, extract_patches
from steelqc.strip import StripModel, keras_strip_model, score_strips
from steelqc.thresholds import Thresholds, decide, image_decision

if TYPE_CHECKING:
    from steelqc.novelty import NoveltyGuard


class BatchPredictor(Protocol):
    """A Keras model, or anything standing in for one (e.g. monitoring's embedding recorder)."""

    def predict_on_batch(self, x: np.ndarray) -> Any: ...


def score_in_batches(model: BatchPredictor, patches: np.ndarray, batch_size: int) -> np.ndarray:
    """Float64 scores ``(N,)`` of uint8 patches ``(N, S, S)``: preprocessed and predicted ``batch_size`` at a time."""
    scores = [
        np.asarray(model.predict_on_batch(preprocess_patches(patches[start : start + batch_size]))).reshape(-1)
        for start in range(0, len(patches), batch_size)
    ]
    return np.concatenate(scores).astype(np.float64) if scores else np.empty(0, np.float64)


@dataclass(frozen=True)
class ImageResult:
    """The decision on one image and the patch evidence behind it."""

    decision: str
    worst_score: float
    worst_patch: tuple[int, int]  # (y, x) of the top-left corner of the highest-scoring patch
    patch_scores: np.ndarray  # float (N,), aligned with positions
    positions: list[tuple[int, int]]
    patch_decisions: np.ndarray  # "PASS" | "HOLD" | "FAIL" per patch
    embeddings: np.ndarray | None = None  # (N, E) in strip mode, where the head computes them anyway
    patch_novelty: np.ndarray | None = None  # novelty per patch, when the model carries a novelty guard
    novel: np.ndarray | None = None  # patches above the novelty threshold
    reason: str = ""  # "novel pattern" when a patch is novel


class Inspector:
    """Scores every patch of every image with one model and applies the model's thresholds.

    ``mode`` is the registered model's (:data:`~steelqc.config.InferenceMode`): ``patches`` cuts the patch
    grid and runs each patch through ``model``; ``strip`` runs the backbone once per image and scores the same
    grid's windows from its feature map (:mod:`steelqc.strip`). ``model`` is a Keras patch model, or an
    exported runtime of the same mode.
    """

    def __init__(
        self,
        model: BatchPredictor | StripModel,
        thresholds: Thresholds,
        patch_size: int,
        stride: int,
        pad_mode: PadMode,
        *,
        batch_size: int = 64,
        mode: InferenceMode = PATCHES,
        strips_per_call: int = 4,
        novelty: NoveltyGuard | None = None,
    ) -> None:
        if mode not in (PATCHES, STRIP):
            raise ValueError(f"inference mode must be {PATCHES} or {STRIP}, got {mode!r}")
        if isinstance(model, StripModel) and mode != STRIP:
            raise ValueError("a strip-mode export scores whole strips: its Inspector needs mode='strip'")
        if novelty is not None and novelty.bank.mode != mode:  # features of the other mode are not comparable
            raise ValueError(f"the novelty guard was calibrated in {novelty.bank.mode} mode, not {mode} mode")
        self.model = model
        self.novelty = novelty
        self.thresholds = thresholds
        self.patch_size = patch_size
        self.stride = stride
        self.pad_mode = pad_mode
        self.batch_size = batch_size
        self.mode = mode
        self.strips_per_call = strips_per_call
        self._strip: StripModel | None = model if isinstance(model, StripModel) else None

    @property
    def strip_model(self) -> StripModel:
        """The strip-mode scorer: the export itself, or the Keras model's backbone rebuilt for any size (once)."""
        if self._strip is None:
            self._strip = keras_strip_model(self.model)
        return self._strip

    @property
    def runtime(self) -> str:
        return str(getattr(self.model, "runtime", "keras"))

    def score_patches(self, patches: np.ndarray) -> np.ndarray:
        """Sigmoid scores of uint8 patches ``(N, S, S)``, one model call per batch (patch mode)."""
        return score_in_batches(cast(BatchPredictor, self.model), patches, self.batch_size)

    def inspect(self, images: Iterable[np.ndarray]) -> list[ImageResult]:
        """Decide on each image; images of any size work (smaller than a patch: padded per ``pad_mode``).

        Images are scored in groups (patch mode: up to ``16 * batch_size`` patches; strip mode:
        ``strips_per_call`` images), so a long stream of images does not grow memory beyond the results.
        """
        if self.mode == STRIP:
            results: list[ImageResult] = []
            group: list[np.ndarray] = []
            for image in images:
                group.append(image)
                if len(group) >= self.strips_per_call:
                    results.extend(self._decide_strips(group))
                    group = []
            return results + (self._decide_strips(group) if group else [])
        results = []
        pending: list[tuple[np.ndarray, list[tuple[int, int]]]] = []
        held = 0
        for image in images:
            pending.append(extract_patches(image, self.patch_size, self.stride, self.pad_mode))
            held += len(pending[-1][0])
            if held >= 16 * self.batch_size:
                results.extend(self._decide(pending))
                pending, held = [], 0
        if pending:
            results.extend(self._decide(pending))
        return results

    def _decide_strips(self, images: Sequence[np.ndarray]) -> list[ImageResult]:
        scored = score_strips(self.strip_model, images, self.patch_size, self.stride, self.pad_mode,
                              strips_per_call=self.strips_per_call)  # fmt: skip
        results = [self._result(s.scores, s.positions, s.embeddings) for s in scored]
        return results if self.novelty is None else self._guarded(results, self.novelty.strip_novelty(scored))

    def _decide(self, per_image: list[tuple[np.ndarray, list[tuple[int, int]]]]) -> list[ImageResult]:
        batch = np.concatenate([patches for patches, _ in per_image])
        if self.novelty is None:
            all_scores, all_novelty = self.score_patches(batch), None
        else:
            all_scores, all_novelty = self.novelty.scores_and_novelty(self.model, batch, self.batch_size)
        results: list[ImageResult] = []
        start = 0
        for patches, positions in per_image:
            results.append(self._result(all_scores[start : start + len(patches)], positions))
            start += len(patches)
        return results if all_novelty is None else self._guarded(results, all_novelty)

    def _guarded(self, results: list[ImageResult], novelty: np.ndarray) -> list[ImageResult]:
        """``results`` with every novel patch at least HOLD and the reason ``novel pattern`` (novelty: patch order)."""
        from steelqc.novelty import NOVEL_PATTERN, guard_decisions

        assert self.novelty is not None
        guarded, start = [], 0
        for result in results:
            mine, start = novelty[start : start + len(result.positions)], start + len(result.positions)
            decisions, novel = guard_decisions(result.patch_decisions, mine, self.novelty.threshold)
            reason = NOVEL_PATTERN if novel.any() else ""
            guarded.append(replace(result, decision=image_decision(decisions), patch_decisions=decisions,
                                   patch_novelty=mine, novel=novel, reason=reason))  # fmt: skip
        return guarded

    def _result(
        self, scores: np.ndarray, positions: Sequence[tuple[int, int]], embeddings: np.ndarray | None = None
    ) -> ImageResult:
        worst = int(np.argmax(scores))
        decisions = decide(scores, self.thresholds)
        return ImageResult(
            decision=image_decision(decisions),
            worst_score=float(scores[worst]),
            worst_patch=(int(positions[worst][0]), int(positions[worst][1])),
            patch_scores=scores,
            positions=[(int(y), int(x)) for y, x in positions],
            patch_decisions=decisions,
            embeddings=embeddings,
        )


def _as_gray_uint8(array: np.ndarray, name: str) -> np.ndarray:
    """An image array as 2-D uint8: JSON serving delivers int64 and colour arrays get converted, not rejected."""
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        if array.shape[2] == 1:
            array = array[:, :, 0]
        else:
            code = cv2.COLOR_RGB2GRAY if array.shape[2] == 3 else cv2.COLOR_RGBA2GRAY
            array = cv2.cvtColor(_to_uint8(array, name), code)
    if array.ndim != 2 or 0 in array.shape:
        raise ImageDecodeError(f"expected a (H, W) or (H, W, 1|3|4) image array, got shape {array.shape}", file=name)
    return _to_uint8(array, name)


def _to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.integer) and not np.issubdtype(array.dtype, np.floating):
        raise ImageDecodeError(f"image array has dtype {array.dtype}, expected integers 0-255", file=name)
    if array.size and (array.min() < 0 or array.max() > 255 or not np.all(np.mod(array, 1) == 0)):
        raise ImageDecodeError("image array values must be whole numbers in 0-255", file=name)
    return array.astype(np.uint8)


def decode_inputs(items: Sequence[bytes | np.ndarray], *, names: Sequence[str] | None = None) -> list[np.ndarray]:
    """Encoded image bytes or pixel arrays to grayscale uint8 ``(H, W)``; a bad item names itself in the error."""
    images: list[np.ndarray] = []
    for i, item in enumerate(items):
        name = names[i] if names is not None else f"input[{i}]"
        if isinstance(item, (bytes, bytearray, memoryview)):
            images.append(decode_image_bytes(bytes(item), name=name).pixels)
        elif isinstance(item, np.ndarray):
            images.append(_as_gray_uint8(item, name))
        else:
            raise ImageDecodeError(f"expected image bytes or a pixel array, got {type(item).__name__}", file=name)
    return images
