"""The champion/challenger rule: recall may not drop, the target must be met, a broken champion fails safe."""

from steelqc.config import ThresholdSettings
from steelqc.gate import RecallBound, gate
from steelqc.thresholds import Thresholds

GOOD = {"patch_recall": 0.99, "image_recall": 1.0, "patch_precision": 0.6, "patch_specificity": 0.8}


def test_no_champion_passes_on_target_alone() -> None:
    decision = gate(GOOD, None, recall_target=0.95)
    assert decision.passed and "no champion" in decision.reason
    assert decision.champion is None


def test_below_target_fails_even_without_champion() -> None:
    decision = gate({**GOOD, "patch_recall": 0.90}, None, recall_target=0.95)
    assert not decision.passed and "below the target" in decision.reason


def test_bound_not_met_fails_naming_the_target_and_confidence_it_was_checked_against() -> None:
    """The bound is checked against thresholds.recall_target at thresholds.confidence, not the gate's target."""
    short = Thresholds(0.2, 0.8, 1.0, 0.8913, 0.9, 0.7, 21, 40, False, "too few validation positives")
    bound = RecallBound.of(short, ThresholdSettings(recall_target=0.95, confidence=0.9))
    decision = gate(GOOD, None, recall_target=0.5, recall_bound=bound)
    assert not decision.passed
    assert decision.reason == (
        "the validation recall bound 0.8913 at 90% confidence did not reach thresholds.recall_target 0.95"
    )
    assert "validation recall bound at 90% confidence >= 0.95" in decision.rule


def test_no_confidence_level_means_no_bound_to_check() -> None:
    unbounded = Thresholds(0.2, 0.8, 1.0, 1.0, 0.9, 0.7, 21, 40, True, "no confidence level")
    assert RecallBound.of(unbounded, ThresholdSettings(recall_target=0.95, confidence=None)) is None
    assert gate(GOOD, None, recall_target=0.95, recall_bound=None).passed


def test_better_recall_passes_and_reports_deltas() -> None:
    champion = {**GOOD, "patch_recall": 0.97, "patch_precision": 0.7}
    decision = gate(GOOD, champion, recall_target=0.95, champion_version="3")
    assert decision.passed
    assert abs(decision.deltas["patch_recall"] - 0.02) < 1e-9
    assert abs(decision.deltas["patch_precision"] + 0.1) < 1e-9
    assert decision.champion_version == "3"


def test_equal_recall_passes() -> None:
    assert gate(GOOD, dict(GOOD), recall_target=0.95, champion_version="1").passed


def test_worse_patch_or_image_recall_fails() -> None:
    worse_patch = gate({**GOOD, "patch_recall": 0.985}, GOOD, recall_target=0.95, champion_version="1")
    assert not worse_patch.passed and "patch_recall" in worse_patch.reason
    worse_image = gate({**GOOD, "image_recall": 0.98}, GOOD, recall_target=0.95, champion_version="1")
    assert not worse_image.passed and "image_recall" in worse_image.reason


def test_tolerance_allows_a_configured_drop() -> None:
    slightly_worse = {**GOOD, "patch_recall": 0.985}
    assert gate(slightly_worse, GOOD, recall_target=0.95, tolerance=0.01, champion_version="1").passed


def test_broken_champion_fails_safe() -> None:
    decision = gate(GOOD, None, recall_target=0.95, champion_version="2", champion_error="artefacts missing")
    assert not decision.passed and "failing safe" in decision.reason


def test_missing_metrics_fail() -> None:
    assert not gate({"patch_recall": 1.0}, None, recall_target=0.95).passed


def test_round_trip() -> None:
    decision = gate(GOOD, GOOD, recall_target=0.95, champion_version="1")
    assert type(decision).from_dict(decision.to_dict()) == decision


def test_model_flagging_everything_fails() -> None:
    flags_all = {**GOOD, "patch_recall": 1.0, "patch_specificity": 0.01}
    decision = gate(flags_all, None, recall_target=0.95, min_specificity=0.1)
    assert not decision.passed and "specificity" in decision.reason


def test_evidence_rows_put_gated_metrics_first_and_show_what_one_side_lacks() -> None:
    from steelqc.gate_evidence import evidence_markdown, evidence_rows

    challenger = {"patch_precision": 0.5, "patch_recall": 0.99, "image_recall": 1.0}
    decision = gate(challenger, None, recall_target=0.95)
    assert [row[0] for row in evidence_rows(decision)] == ["patch_recall", "image_recall", "patch_precision"]
    assert evidence_rows(decision)[0] == ("patch_recall", 0.99, None, None)
    assert "| patch_recall | 0.9900 | – | – |" in evidence_markdown(decision, "1")
    assert "champion (none)" in evidence_markdown(decision, "1")
