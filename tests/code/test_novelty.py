"""Novelty score and calibration on crafted embeddings and synthetic score sets (no model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from steelqc.config import NoveltySettings
from steelqc.novelty import (
    NoveltyBank,
    build_bank,
    calibrate,
    greedy_coreset,
    guard_decisions,
    hold_rate_upper_bound,
)


def test_a_patch_in_the_bank_scores_zero_and_novelty_grows_with_distance() -> None:
    bank_rows = np.random.default_rng(0).normal(size=(50, 16)).astype(np.float32)
    bank = NoveltyBank(bank_rows, layer="pool", k=1)
    assert np.array_equal(bank.scores(bank_rows[:10]), np.zeros(10))
    direction = np.zeros(16, np.float32)
    direction[0] = 1.0
    far = bank_rows[:1] + np.outer([0.5, 1, 2, 4, 8, 16], direction).astype(np.float32)
    novelty = bank.scores(far)
    assert np.all(np.diff(novelty) > 0) and novelty[0] <= 0.5 + 1e-6
    assert novelty[-1] == pytest.approx(np.linalg.norm(far[-1] - bank_rows, axis=1).min(), rel=1e-5)


def test_k_neighbours_average_the_k_nearest_distances() -> None:
    bank = NoveltyBank(np.array([[0.0], [1.0], [3.0]], np.float32), layer="pool", k=2)
    assert bank.scores(np.array([[0.0], [10.0]])).tolist() == pytest.approx([0.5, 8.0])


def test_bank_keeps_at_most_bank_size_entries_and_records_how_it_was_built() -> None:
    rows = np.random.default_rng(1).normal(size=(400, 8))
    for subsample in ("coreset", "random"):
        bank = build_bank(rows, NoveltySettings(bank_size=50, subsample=subsample))
        assert len(bank) == 50 and bank.info["n_source_patches"] == 400 and bank.info["build_seconds"] >= 0
        assert bank.info["subsample"] == subsample


def test_coreset_covers_an_outlying_clean_look_a_random_sample_would_likely_miss() -> None:
    rows = np.vstack([np.random.default_rng(2).normal(size=(995, 4)), np.full((5, 4), 50.0)])
    chosen = greedy_coreset(rows, 20)
    assert len(set(chosen.tolist())) == 20 and np.any(chosen >= 995)


@pytest.mark.parametrize("budget", [0.03, 0.05, 0.1])
@pytest.mark.parametrize("prove", [False, True])
def test_calibration_meets_its_budget_on_fresh_clean_scores(budget: float, prove: bool) -> None:
    rng = np.random.default_rng(3)
    calibration = calibrate(rng.gamma(2.0, 1.0, 3000), budget, confidence=0.95, prove=prove)
    assert calibration.hold_rate <= budget and calibration.bound_met == (calibration.hold_rate_bound <= budget)
    assert calibration.bound_met if prove else calibration.hold_rate > budget - 1 / 3000
    fresh_hold_rates = [np.mean(rng.gamma(2.0, 1.0, 3000) > calibration.threshold) for _ in range(20)]
    assert np.mean(fresh_hold_rates) <= budget and (max(fresh_hold_rates) <= budget or not prove)


def test_proven_calibration_is_the_lowest_threshold_whose_clopper_pearson_bound_meets_the_budget() -> None:
    scores = np.arange(1000, dtype=np.float64)
    calibration = calibrate(scores, 0.03, confidence=0.95, prove=True)
    held = int(np.sum(scores > calibration.threshold))
    assert calibration.hold_rate == held / 1000
    assert calibration.hold_rate_bound == pytest.approx(hold_rate_upper_bound(held, 1000, 0.95))
    assert calibration.hold_rate_bound <= 0.03
    assert hold_rate_upper_bound(held + 1, 1000, 0.95) > 0.03


def test_too_few_clean_images_to_prove_the_budget_keep_the_observed_rate_and_say_how_many_are_needed() -> None:
    calibration = calibrate(np.linspace(0, 1, 40), 0.03, confidence=0.95, prove=True)
    assert not calibration.bound_met
    assert calibration.hold_rate == 1 / 40 and calibration.threshold == pytest.approx(38 / 39)
    assert "at least 99 with none held" in calibration.note


def test_calibration_without_confidence_holds_the_budget_share() -> None:
    calibration = calibrate(np.arange(100, dtype=np.float64), 0.05, confidence=None)
    assert calibration.bound_met and calibration.hold_rate == 0.05 and calibration.threshold == 94.0


def test_novelty_only_raises_pass_to_hold_and_never_lowers_a_decision() -> None:
    decisions = np.array(["PASS", "PASS", "HOLD", "FAIL"])
    guarded, novel = guard_decisions(decisions, np.array([0.1, 5.0, 5.0, 5.0]), threshold=1.0)
    assert guarded.tolist() == ["PASS", "HOLD", "HOLD", "FAIL"] and novel.tolist() == [False, True, True, True]


def test_bank_round_trips_through_a_file(tmp_path: Path) -> None:
    bank = build_bank(np.random.default_rng(4).normal(size=(30, 6)), NoveltySettings(bank_size=10, k=2))
    bank.calibration = calibrate(bank.scores(np.random.default_rng(5).normal(size=(200, 6))), 0.05, None)
    loaded = NoveltyBank.load(bank.save(tmp_path / "bank.npz"))
    assert np.array_equal(loaded.embeddings, bank.embeddings) and loaded.summary() == bank.summary()
    queries = np.random.default_rng(6).normal(size=(5, 6))
    assert np.array_equal(loaded.scores(queries), bank.scores(queries))
