"""Champion/challenger gate: a pure function of two evaluations on the same test split.

The rule is recall-first: the challenger must meet the recall target (and its validation recall bound,
when one was asked for), and must not lose recall against the champion on any gated metric (within a
configurable tolerance). Precision, specificity and image-level deltas are reported beside it so the
QA lead sees what the recall costs. A champion that could not be scored makes the gate fail safe.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from steelqc.config import ThresholdSettings
    from steelqc.thresholds import Thresholds

#: Metrics whose drop blocks a promotion (patch level and image level recall at ``t_pass``).
GATED_METRICS = ("patch_recall", "image_recall")
#: Metrics reported beside the decision so the cost of the recall is visible.
REPORTED_METRICS = (
    "patch_recall",
    "image_recall",
    "patch_precision",
    "image_precision",
    "patch_specificity",
    "image_specificity",
    "patch_pr_auc",
    "image_f2",
)


def side_by_side(challenger: Mapping[str, float], champion: Mapping[str, float] | None) -> list[dict[str, Any]]:
    """The gate evidence as QA reads it: one row per metric (reported metrics first), both models and the difference.

    ``champion`` and ``difference`` are None where the champion lacks the metric (or there is no champion).
    """
    names = [m for m in REPORTED_METRICS if m in challenger] + sorted(set(challenger) - set(REPORTED_METRICS))
    champion = champion or {}
    return [
        {
            "metric": name,
            "challenger": float(challenger[name]),
            "champion": float(champion[name]) if name in champion else None,
            "difference": float(challenger[name]) - float(champion[name]) if name in champion else None,
        }
        for name in names
    ]


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict and all the evidence it was based on."""

    passed: bool
    reason: str
    rule: str
    challenger: dict[str, float]
    champion: dict[str, float] | None = None
    deltas: dict[str, float] = field(default_factory=dict)
    champion_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateDecision:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


@dataclass(frozen=True)
class RecallBound:
    """The validation recall bound the challenger's ``t_pass`` was chosen with, and what it was checked against."""

    met: bool
    value: float  # one-sided Clopper–Pearson lower bound of validation recall at t_pass
    target: float  # thresholds.recall_target
    confidence: float  # thresholds.confidence

    @classmethod
    def of(cls, thresholds: Thresholds, settings: ThresholdSettings) -> RecallBound | None:
        """The bound of ``thresholds`` chosen with ``settings``; None when no confidence level asked for one."""
        if settings.confidence is None:
            return None
        return cls(thresholds.bound_met, thresholds.recall_bound, settings.recall_target, settings.confidence)


def _pick(metrics: Mapping[str, float]) -> dict[str, float]:
    return {name: float(metrics[name]) for name in REPORTED_METRICS if name in metrics}


def gate(
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    *,
    recall_target: float,
    tolerance: float = 0.0,
    min_specificity: float = 0.0,
    recall_bound: RecallBound | None = None,
    champion_version: str | None = None,
    champion_error: str | None = None,
) -> GateDecision:
    """Decide whether the challenger may be proposed for promotion.

    ``challenger`` and ``champion`` are evaluation metrics on the *same* test split. ``recall_bound`` is
    the challenger's validation recall bound (None when no confidence level asked for one).
    ``champion_error`` is set when a champion exists but could not be loaded or scored: fail safe.
    ``min_specificity`` keeps out a model that buys its recall by flagging (nearly) every clean patch.
    """
    bound_rule = (
        f" (validation recall bound at {recall_bound.confidence:.0%} confidence >= {recall_bound.target})"
        if recall_bound is not None
        else ""
    )
    rule = (
        f"challenger patch_recall >= {recall_target}{bound_rule}, patch_specificity >= {min_specificity} and, "
        f"against the champion, every one of {', '.join(GATED_METRICS)} >= champion - {tolerance}"
    )
    picked = _pick(challenger)
    champ = _pick(champion) if champion is not None else None

    def verdict(passed: bool, reason: str) -> GateDecision:
        deltas = {name: picked[name] - champ[name] for name in picked if champ and name in champ}
        return GateDecision(passed, reason, rule, picked, champ, deltas, champion_version)

    missing = [name for name in GATED_METRICS if name not in challenger]
    if missing:
        return verdict(False, f"challenger metrics missing: {', '.join(missing)}")
    if champion_error is not None:
        return verdict(False, f"champion v{champion_version} could not be scored ({champion_error}); failing safe")
    recall = float(challenger["patch_recall"])
    if recall < recall_target:
        return verdict(False, f"patch recall {recall:.4f} is below the target {recall_target}")
    if recall_bound is not None and not recall_bound.met:
        return verdict(
            False,
            f"the validation recall bound {recall_bound.value:.4f} at {recall_bound.confidence:.0%} confidence "
            f"did not reach thresholds.recall_target {recall_bound.target}",
        )
    specificity = float(challenger.get("patch_specificity", 1.0))
    if specificity < min_specificity:
        return verdict(
            False,
            f"patch specificity {specificity:.4f} is below {min_specificity}: the model flags almost every clean patch",
        )
    if champion is None:
        return verdict(True, "no champion yet: the recall target alone decides")
    dropped = [
        f"{name} {picked[name]:.4f} < champion {float(champion[name]):.4f}"
        for name in GATED_METRICS
        if name in champion and picked[name] < float(champion[name]) - tolerance
    ]
    if dropped:
        return verdict(False, "recall dropped: " + "; ".join(dropped))
    return verdict(True, f"recall holds against champion v{champion_version}")
