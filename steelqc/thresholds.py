"""Recall-first operating points, chosen on *validation* scores only, and the PASS / HOLD / FAIL decision.

A patch scoring below ``t_pass`` passes; at or above ``t_fail`` it fails automatically; in between it is
held for a human. ``t_pass`` is set by the recall target (optionally with a Clopper–Pearson lower confidence
bound, so a handful of lucky positives cannot claim 99.5% recall); ``t_fail`` by the precision target.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import beta
from sklearn.metrics import precision_recall_curve, recall_score

from steelqc.config import ThresholdSettings

PASS, HOLD, FAIL = "PASS", "HOLD", "FAIL"
_SEVERITY = {PASS: 0, HOLD: 1, FAIL: 2}
# When no threshold reaches the precision target nothing may FAIL automatically: scores are ≤ 1.0, so
# t_fail just above 1.0 sends every flagged patch to HOLD (human review) instead of guessing.
NO_AUTOMATIC_FAIL = float(np.nextafter(1.0, 2.0))


@dataclass(frozen=True)
class Thresholds:
    """The operating points and the validation evidence behind them.

    ``recall_bound`` is the one-sided Clopper–Pearson lower bound of recall at ``t_pass`` (equal to
    ``recall_at_pass`` when no confidence level is set). ``precision_at_fail`` is None when no threshold
    reached the precision target (then ``t_fail`` = :data:`NO_AUTOMATIC_FAIL`).
    """

    t_pass: float
    t_fail: float
    recall_at_pass: float
    recall_bound: float
    precision_at_fail: float | None
    specificity_at_pass: float
    n_positives: int
    n_negatives: int
    bound_met: bool
    note: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Thresholds:
        return cls(**data)


def recall_lower_bound(detected: int, positives: int, confidence: float) -> float:
    """One-sided Clopper–Pearson lower bound of a recall of ``detected / positives`` at ``confidence``."""
    return float(_recall_lower_bounds(np.array([detected]), positives, confidence)[0])


def _recall_lower_bounds(detected: np.ndarray, positives: int, confidence: float) -> np.ndarray:
    """:func:`recall_lower_bound` of every candidate at once (one vectorised ``beta.ppf``, not one per threshold)."""
    bounds = beta.ppf(1.0 - confidence, np.maximum(detected, 1), positives - detected + 1)
    return np.where(detected > 0, bounds, 0.0)


def positives_needed(recall_target: float, confidence: float) -> int:
    """Fewest positives, all detected, whose recall lower bound reaches the target: (1-c)^(1/n) ≥ target."""
    if recall_target >= 1.0:
        raise ValueError("a recall target of 1.0 can never be proven with a confidence bound")
    return math.ceil(math.log(1.0 - confidence) / math.log(recall_target))


def _validated(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    raw = np.asarray(y_true).ravel()
    if not np.isin(raw, (0, 1)).all():
        raise ValueError(f"y_true must hold 0/1 labels, found {sorted(set(np.unique(raw).tolist()) - {0, 1})[:5]}")
    y = raw.astype(bool)
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} entries but scores has {s.size}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"scores contain {int(np.sum(~np.isfinite(s)))} non-finite values")
    if not y.any():
        raise ValueError("validation split has no defect patches: recall and t_pass are undefined")
    if y.all():
        raise ValueError("validation split has no clean patches: precision/specificity and t_fail are undefined")
    return y, s


def choose_thresholds(y_true: np.ndarray, scores: np.ndarray, settings: ThresholdSettings) -> Thresholds:
    """Pick ``t_pass`` from the recall target (and its confidence bound) and ``t_fail`` from the precision target."""
    y, s = _validated(y_true, scores)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    # thresholds ascend; recall[i] / precision[i] hold for "score >= thresholds[i]"
    precision, recall, candidates = precision_recall_curve(y, s)
    precision, recall = precision[:-1], recall[:-1]
    detected = np.rint(recall * n_pos).astype(int)

    if settings.confidence is None:
        ok = recall >= settings.recall_target
        bounds = recall
    else:
        bounds = _recall_lower_bounds(detected, n_pos, settings.confidence)
        ok = bounds >= settings.recall_target

    if ok.any():
        i_pass = int(np.flatnonzero(ok).max())
        bound_met = True
        note = (
            f"t_pass meets recall target {settings.recall_target}"
            + (f" at {settings.confidence:.0%} confidence" if settings.confidence is not None else "")
            + f" with {n_pos} validation positives"
        )
    else:  # only possible with a confidence level: too few positives to prove the target
        assert settings.confidence is not None
        i_pass = int(np.flatnonzero(recall >= 1.0).max())  # the lowest positive score
        bound_met = False
        needed = positives_needed(settings.recall_target, settings.confidence)
        note = (
            f"too few validation positives to prove recall ≥ {settings.recall_target} at "
            f"{settings.confidence:.0%} confidence: with {n_pos} positives all detected the lower bound "
            f"is {bounds[i_pass]:.4f}; at least {needed} positives (all detected) are needed. "
            "t_pass is the lowest positive score (validation recall 1.0)"
        )
    t_pass = float(candidates[i_pass])

    fail_ok = (candidates >= t_pass) & (precision >= settings.precision_target)
    if fail_ok.any():
        i_fail = int(np.flatnonzero(fail_ok).min())
        t_fail, precision_at_fail = float(candidates[i_fail]), float(precision[i_fail])
    else:
        t_fail, precision_at_fail = NO_AUTOMATIC_FAIL, None
        note += f"; no threshold reaches precision {settings.precision_target}, so nothing FAILs automatically"

    specificity = recall_score(y, s >= t_pass, pos_label=False)
    return Thresholds(
        t_pass=t_pass,
        t_fail=t_fail,
        recall_at_pass=float(recall[i_pass]),
        recall_bound=float(bounds[i_pass]),
        precision_at_fail=precision_at_fail,
        specificity_at_pass=float(specificity),
        n_positives=n_pos,
        n_negatives=n_neg,
        bound_met=bound_met,
        note=note,
    )


def decide(scores: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    """Per patch: ``PASS`` below ``t_pass``, ``FAIL`` at or above ``t_fail``, ``HOLD`` in between.

    A NaN score (a broken model) is ``HOLD``: it compares false with every threshold and would otherwise PASS.
    """
    s = np.asarray(scores, dtype=np.float64)
    return np.where(s >= thresholds.t_fail, FAIL, np.where((s >= thresholds.t_pass) | np.isnan(s), HOLD, PASS))


def image_decision(patch_decisions: np.ndarray | list[str]) -> str:
    """An image is as bad as its worst patch."""
    decisions = list(np.asarray(patch_decisions).ravel())
    if not decisions:
        raise ValueError("an image needs at least one patch decision")
    unknown = set(decisions) - _SEVERITY.keys()
    if unknown:
        raise ValueError(f"unknown patch decisions {sorted(unknown)}; expected PASS, HOLD or FAIL")
    return max(decisions, key=_SEVERITY.__getitem__)


def decision_reason(worst_score: float, thresholds: Thresholds) -> str:
    """Why an image got its decision, in the operator's terms: its worst patch score against the thresholds."""
    score, t_pass, t_fail = worst_score, thresholds.t_pass, thresholds.t_fail
    if np.isnan(score):
        return "the model returned no score (NaN): a person must look"
    if score >= t_fail:
        return f"worst patch score {score:.3f} ≥ t_fail {t_fail:.3f}"
    if score < t_pass:
        return f"worst patch score {score:.3f} < t_pass {t_pass:.3f}"
    upper = f"< t_fail {t_fail:.3f}" if t_fail <= 1.0 else "(no automatic FAIL)"
    return f"t_pass {t_pass:.3f} ≤ worst patch score {score:.3f} {upper}: a person must look"


def hold_band_note(thresholds: Thresholds) -> str:
    """What the thresholds mean for the three decisions; says so when the HOLD band is empty or nothing can FAIL."""
    t_pass, t_fail = thresholds.t_pass, thresholds.t_fail
    if t_fail <= t_pass:
        return (
            f"This model has no HOLD band: t_pass = t_fail = {t_pass:.3f}, so every image is PASS (worst patch below "
            f"{t_pass:.3f}) or FAIL (at or above it) and none is sent to a person. The threshold that reaches the "
            "recall target already reaches the precision target."
        )
    if t_fail > 1.0:
        return (
            f"PASS below t_pass = {t_pass:.3f}, HOLD (a person looks) at or above it; no automatic FAIL: "
            "no threshold reached the precision target."
        )
    return f"PASS below t_pass = {t_pass:.3f} · HOLD (a person looks) up to t_fail = {t_fail:.3f} · FAIL from there."
