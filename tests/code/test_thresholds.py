"""Threshold selection on crafted validation scores with hand-computed expected operating points."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from steelqc.config import ThresholdSettings
from steelqc.thresholds import (
    NO_AUTOMATIC_FAIL,
    Thresholds,
    choose_thresholds,
    decide,
    decision_reason,
    hold_band_note,
    image_decision,
    positives_needed,
    recall_lower_bound,
)

# 10 positives and 9 negatives; two negatives (0.62, 0.72) sit among the positives.
POSITIVES = [0.35, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
NEGATIVES = [0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.62, 0.72]
Y = np.array([1] * len(POSITIVES) + [0] * len(NEGATIVES))
SCORES = np.array(POSITIVES + NEGATIVES)


def settings(recall: float, precision: float, confidence: float | None = None) -> ThresholdSettings:
    return ThresholdSettings(recall_target=recall, precision_target=precision, confidence=confidence)


def test_t_pass_is_highest_threshold_reaching_recall_and_t_fail_lowest_reaching_precision() -> None:
    t = choose_thresholds(Y, SCORES, settings(0.9, 0.9))
    assert t.t_pass == 0.55  # 9 of 10 positives score ≥ 0.55; at 0.6 only 8
    assert t.recall_at_pass == pytest.approx(0.9)
    assert t.specificity_at_pass == pytest.approx(7 / 9)  # 0.62 and 0.72 are flagged
    assert t.t_fail == 0.75  # precision 5/5; at 0.72 it is 5/6
    assert t.precision_at_fail == 1.0
    assert (t.n_positives, t.n_negatives, t.bound_met) == (10, 9, True)
    assert t.recall_bound == t.recall_at_pass  # no confidence level: the bound is the point estimate


def test_t_fail_takes_the_lowest_qualifying_threshold_although_precision_is_not_monotonic() -> None:
    t = choose_thresholds(Y, SCORES, settings(0.9, 0.85))
    assert t.t_fail == 0.65  # precision 7/8 = 0.875; 0.7 would give 6/7, 0.62 gives 7/9
    assert t.precision_at_fail == pytest.approx(7 / 8)


def test_t_fail_is_never_below_t_pass() -> None:
    t = choose_thresholds(Y, SCORES, settings(1.0, 0.5))
    assert t.t_pass == 0.35
    assert t.t_fail == 0.35  # precision at 0.35 is 10/14 ≥ 0.5; lower thresholds are not allowed


def test_confidence_bound_lowers_t_pass() -> None:
    plain = choose_thresholds(Y, SCORES, settings(0.65, 0.9))
    bounded = choose_thresholds(Y, SCORES, settings(0.65, 0.9, confidence=0.9))
    assert plain.t_pass == 0.65  # 7 of 10 detected is enough for a point estimate of 0.65
    # Clopper–Pearson 90% lower bounds with n=10: k=8 → 0.550, k=9 → 0.663 ≥ 0.65
    assert bounded.t_pass == 0.55
    assert bounded.recall_bound == pytest.approx(0.66315, abs=1e-4)
    assert bounded.bound_met


def test_too_few_positives_for_the_bound_falls_back_to_full_recall_and_says_so() -> None:
    t = choose_thresholds(Y, SCORES, settings(0.995, 0.95, confidence=0.95))
    assert t.t_pass == min(POSITIVES)
    assert t.recall_at_pass == 1.0
    assert not t.bound_met
    assert t.recall_bound == pytest.approx(0.05 ** (1 / 10))  # (1-c)^(1/n) with all 10 detected
    assert "598" in t.note and "0.7411" in t.note
    assert positives_needed(0.995, 0.95) == 598


def test_unreachable_precision_means_nothing_fails_automatically() -> None:
    y = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.95, 0.5, 0.6])
    t = choose_thresholds(y, scores, settings(1.0, 0.99))
    assert t.t_fail == NO_AUTOMATIC_FAIL > 1.0
    assert t.precision_at_fail is None
    assert "nothing FAILs automatically" in t.note
    assert set(decide(np.array([0.1, 0.99, 1.0]), t)) <= {"PASS", "HOLD"}


@pytest.mark.parametrize(
    ("y", "scores", "message"),
    [
        ([0, 0, 0], [0.1, 0.2, 0.3], "no defect patches"),
        ([1, 1], [0.1, 0.2], "no clean patches"),
        ([1, 0], [0.1], "2 entries but scores has 1"),
        ([1, 0], [0.1, np.nan], "non-finite"),
        ([1, 2], [0.1, 0.2], "0/1 labels"),
    ],
)
def test_degenerate_validation_sets_raise_clear_errors(y: list[int], scores: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        choose_thresholds(np.array(y), np.array(scores), settings(0.9, 0.9))


def test_decide_and_image_decision() -> None:
    t = choose_thresholds(Y, SCORES, settings(0.9, 0.9))
    decisions = decide(np.array([0.1, 0.55, 0.7, 0.75, 0.99]), t)
    assert decisions.tolist() == ["PASS", "HOLD", "HOLD", "FAIL", "FAIL"]
    assert image_decision(["PASS", "PASS"]) == "PASS"
    assert image_decision(["PASS", "HOLD", "PASS"]) == "HOLD"
    assert image_decision(decisions) == "FAIL"
    with pytest.raises(ValueError):
        image_decision([])
    with pytest.raises(ValueError, match="unknown"):
        image_decision(["PASS", "MAYBE"])


def test_a_nan_score_is_held_never_passed() -> None:
    t = choose_thresholds(Y, SCORES, settings(0.9, 0.9))
    assert decide(np.array([0.01, np.nan, 0.99]), t).tolist() == ["PASS", "HOLD", "FAIL"]


def test_recall_lower_bound_matches_clopper_pearson() -> None:
    from scipy.stats import beta

    assert recall_lower_bound(0, 10, 0.95) == 0.0
    assert recall_lower_bound(10, 10, 0.95) == pytest.approx(0.05 ** (1 / 10))  # all detected: (1-c)^(1/n)
    assert recall_lower_bound(7, 10, 0.9) == pytest.approx(beta.ppf(0.1, 7, 4))


def test_round_trip_through_json() -> None:
    t = choose_thresholds(Y, SCORES, settings(0.995, 0.95, confidence=0.95))
    assert Thresholds.from_dict(json.loads(json.dumps(t.to_dict()))) == t


@hypothesis_settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.tuples(st.booleans(), st.floats(0, 1)), min_size=2, max_size=60).filter(
        lambda d: any(label for label, _ in d) and not all(label for label, _ in d)
    ),
    recall_target=st.floats(0.05, 1.0),
    precision_target=st.floats(0.05, 1.0),
)
def test_operating_points_hold_for_any_scores(
    data: list[tuple[bool, float]], recall_target: float, precision_target: float
) -> None:
    y = np.array([label for label, _ in data])
    scores = np.array([score for _, score in data])
    t = choose_thresholds(y, scores, settings(recall_target, precision_target))

    def recall(threshold: float) -> float:
        return float(np.mean(scores[y] >= threshold))

    assert recall(t.t_pass) >= recall_target and t.recall_at_pass == pytest.approx(recall(t.t_pass))
    higher = np.unique(scores[scores > t.t_pass])
    assert all(recall(h) < recall_target for h in higher)  # t_pass is the highest that qualifies
    assert t.t_fail >= t.t_pass
    if t.precision_at_fail is not None:
        assert np.mean(y[scores >= t.t_fail]) >= precision_target


def _at(t_pass: float, t_fail: float) -> Thresholds:
    return Thresholds(t_pass, t_fail, 1.0, 1.0, None, 0.5, 10, 10, True, "")


def test_the_reason_compares_the_worst_patch_with_the_threshold_that_decided() -> None:
    band = _at(0.3, 0.7)
    assert decision_reason(0.1, band) == "worst patch score 0.100 < t_pass 0.300"
    assert decision_reason(0.7, band) == "worst patch score 0.700 ≥ t_fail 0.700"
    assert decision_reason(0.5, band) == "t_pass 0.300 ≤ worst patch score 0.500 < t_fail 0.700: a person must look"
    assert "(no automatic FAIL)" in decision_reason(0.99, _at(0.3, NO_AUTOMATIC_FAIL))
    assert "NaN" in decision_reason(float("nan"), band)


def test_the_hold_band_note_never_describes_a_band_that_cannot_occur() -> None:
    assert hold_band_note(_at(0.3, 0.7)).startswith("PASS below t_pass = 0.300 · HOLD (a person looks) up to t_fail")
    empty = hold_band_note(_at(0.5, 0.5))
    assert empty.startswith("This model has no HOLD band: t_pass = t_fail = 0.500") and "HOLD (a person" not in empty
    assert "no automatic FAIL" in hold_band_note(_at(0.3, NO_AUTOMATIC_FAIL))
