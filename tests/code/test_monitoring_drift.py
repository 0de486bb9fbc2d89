"""Evidently drift reports on patch features of generated production batches with controlled shifts.

Reference: 60 generated strips. Production: 30 strips from another seed, either from the same
distribution or with one controlled shift (brighter light, blur, a defect look the generator never draws).
Features only (no model), so these run in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from steelqc.config import MonitoringSettings
from steelqc.data.synth import generate_strip
from steelqc.monitoring import MonitoringDataError, drift_report, patch_features, patch_frame
from steelqc.patches import extract_patches

PATCH = 256


def _bright_combs(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """A defect look not seen in training: small bright comb marks (the generator only draws dark/grey ones)."""
    marked = image.copy()
    for _ in range(rng.integers(3, 8)):
        y, x = rng.integers(0, image.shape[0] - 40), rng.integers(0, image.shape[1] - 40)
        marked[y : y + 40 : 4, x : x + 40] = 250
    return marked


def production_batch(seed: int, strips: int, *, novel_defects: bool = False, **shift: float) -> pd.DataFrame:
    """Patch frame of ``strips`` generated strips (half with one defect class) and plausible scores."""
    rng = np.random.default_rng(seed)
    patches = []
    for i in range(strips):
        classes = (1 + i % 4,) if rng.random() < 0.5 else ()
        image, _ = generate_strip(rng, defective_classes=classes, **shift)
        if novel_defects:
            image = _bright_combs(rng, image)
        patches.append(extract_patches(image, PATCH, PATCH, "reflect")[0])
    stacked = np.concatenate(patches)
    return patch_frame(patch_features(stacked), rng.beta(1, 6, len(stacked)))


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return production_batch(0, 60)


def test_same_distribution_is_not_drift(reference: pd.DataFrame, tmp_path: Path) -> None:
    result = drift_report(reference, production_batch(12, 30), tmp_path, MonitoringSettings())
    assert not result.drift_detected, result.reasons
    assert result.drifted_columns == [] and result.drifted_share == 0
    assert not result.score_drift
    assert result.reasons == []
    assert result.embedding_drift is None and "embeddings not compared" in result.notes[0]


@pytest.mark.parametrize(
    ("shift", "expected_columns"),
    [
        ({"brightness": 30.0}, {"intensity_mean"}),
        ({"blur_sigma": 1.5}, {"blur", "edge_density"}),
        ({"novel_defects": True}, {"blur"}),
    ],
    ids=["brighter-light", "blur", "unseen-defect-look"],
)
def test_controlled_shifts_are_flagged(
    reference: pd.DataFrame, tmp_path: Path, shift: dict[str, float], expected_columns: set[str]
) -> None:
    result = drift_report(reference, production_batch(13, 30, **shift), tmp_path, MonitoringSettings())
    assert result.drift_detected
    assert expected_columns <= set(result.drifted_columns)
    assert all(result.feature_scores[c] >= 0.5 for c in expected_columns)
    assert result.reasons and "drifted" in result.reasons[0]


def test_report_files_and_summary(reference: pd.DataFrame, tmp_path: Path) -> None:
    result = drift_report(reference, production_batch(14, 30, blur_sigma=2.0), tmp_path / "r", MonitoringSettings())
    assert result.html_path.stat().st_size > 10_000 and "<html" in result.html_path.read_text()[:2000].lower()
    summary = json.loads(result.json_path.read_text())
    assert summary["drift_detected"] is True
    assert set(summary["feature_scores"]) == {
        "intensity_mean", "intensity_std", "contrast", "blur", "edge_density", "black_border_fraction"
    }  # fmt: skip
    assert summary["feature_methods"]["blur"] == "wasserstein"
    assert 0 < summary["drifted_share"] <= 1 and "score_drift_score" in summary
    metrics = result.metrics()
    assert metrics["drift_detected"] == 1.0 and "drift_score_blur" in metrics


def test_thresholds_come_from_the_settings(reference: pd.DataFrame, tmp_path: Path) -> None:
    brighter = production_batch(13, 30, brightness=30.0)
    lenient = MonitoringSettings(drift_threshold=5.0)
    assert not drift_report(reference, brighter, tmp_path, lenient).drift_detected
    needs_half = MonitoringSettings(drift_share=0.5)
    result = drift_report(reference, brighter, tmp_path, needs_half)
    assert result.drifted_columns == ["intensity_mean"] and not result.drift_detected


def test_unusable_inputs_are_named(reference: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(MonitoringDataError, match="production patch log has no rows"):
        drift_report(reference, pd.DataFrame(), tmp_path, MonitoringSettings())
    with pytest.raises(MonitoringDataError, match=r"reference set lacks columns \['blur'\]"):
        drift_report(reference.drop(columns="blur"), reference, tmp_path, MonitoringSettings())


def _with_embeddings(frame: pd.DataFrame, seed: int, shift: float) -> pd.DataFrame:
    """8 reduced-embedding columns; the first three moved by ``shift`` reference standard deviations."""
    rng = np.random.default_rng(seed)
    components = rng.normal(size=(len(frame), 8))
    components[:, :3] += shift
    return frame.assign(**{f"emb_{i}": components[:, i] for i in range(8)})


def test_embeddings_alone_can_flag_drift(reference: pd.DataFrame, tmp_path: Path) -> None:
    same_look = production_batch(12, 30)
    ref = _with_embeddings(reference, 1, 0.0)
    steady = drift_report(ref, _with_embeddings(same_look, 2, 0.0), tmp_path / "a", MonitoringSettings())
    assert not steady.drift_detected and steady.embedding_drift is False and steady.embedding_drift_score == 0
    moved = drift_report(ref, _with_embeddings(same_look, 2, 1.0), tmp_path / "b", MonitoringSettings())
    assert moved.drift_detected and moved.drifted_columns == []
    assert moved.embedding_drift is True and moved.embedding_drift_score == pytest.approx(3 / 8)
    assert "embedding components drifted" in moved.reasons[0]


def _with_novel(frame: pd.DataFrame, share: float, days: list[str], seed: int) -> pd.DataFrame:
    """``frame`` with a novelty guard's flag on ``share`` of its patches, logged over ``days``."""
    rng = np.random.default_rng(seed)
    logged_at = pd.to_datetime([days[i % len(days)] for i in range(len(frame))], utc=True)
    return frame.assign(novel=rng.random(len(frame)) < share, logged_at=logged_at)


def test_a_rise_of_novel_patches_is_a_drift_reason_for_its_day(reference: pd.DataFrame) -> None:
    from steelqc.novelty import novelty_rise_reasons

    base = _with_novel(reference, 0.03, ["2026-12-01"], seed=1)
    calm = _with_novel(production_batch(12, 30), 0.03, ["2026-12-03", "2026-12-04"], seed=2)
    shares, reasons = novelty_rise_reasons(base, calm, 2.0)
    assert reasons == [] and set(shares) == {"2026-12-03", "2026-12-04"}

    risen = pd.concat([calm, _with_novel(production_batch(13, 30), 0.4, ["2026-12-04"], seed=3)])
    shares, reasons = novelty_rise_reasons(base, risen, 2.0)
    assert len(reasons) == 1 and "on 2026-12-04" in reasons[0] and shares["2026-12-04"] > 0.15


def test_drift_report_carries_the_novel_share_and_its_reason(reference: pd.DataFrame, tmp_path: Path) -> None:
    base = _with_novel(reference, 0.03, ["2026-12-01"], seed=1)
    risen = _with_novel(production_batch(12, 30), 0.4, ["2026-12-04"], seed=3)
    result = drift_report(base, risen, tmp_path, MonitoringSettings())
    assert result.drift_detected and any(r.startswith("novel patches rose") for r in result.reasons)
    assert result.metrics()["novel_share_max_day"] == result.novel_share_by_day["2026-12-04"] > 0.15
    assert json.loads(result.json_path.read_text())["novel_share_by_day"] == result.novel_share_by_day


def test_novel_share_is_not_judged_without_a_guard(reference: pd.DataFrame) -> None:
    from steelqc.novelty import novelty_rise_reasons

    current = _with_novel(production_batch(12, 10), 0.9, ["2026-12-03"], seed=4)
    assert novelty_rise_reasons(reference, current, 2.0) == ({}, [])
