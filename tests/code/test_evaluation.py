"""Evaluation numbers equal scikit-learn's on a crafted test split; missed defects, breakdowns and plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    fbeta_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from steelqc.config import ThresholdSettings
from steelqc.evaluation import evaluate
from steelqc.thresholds import Thresholds, choose_thresholds

CLASS_IDS = [1, 2, 3, 4]
SIZE = 64


def crafted_split() -> tuple[pd.DataFrame, np.ndarray]:
    """4 images × 5 patches; image d is clean. Defects of every class and size bucket, some missed."""
    #        image  y  x    label  px1   px2  px3    px4  score
    table = [
        ("a", 0, 0, 1, 40, 0, 0, 0, 0.20),  # class 1, <64 px, missed at t_pass 0.3
        ("a", 0, 64, 1, 0, 500, 0, 0, 0.90),
        ("a", 0, 128, 0, 0, 0, 0, 0, 0.35),  # false positive (HOLD)
        ("a", 0, 192, 0, 0, 0, 0, 0, 0.05),
        ("a", 0, 256, 0, 10, 0, 0, 0, 0.10),  # a sliver below the label rule: label 0
        ("b", 0, 0, 1, 0, 0, 3000, 0, 0.60),
        ("b", 0, 64, 1, 0, 0, 0, 20000, 0.95),
        ("b", 0, 128, 0, 0, 0, 0, 0, 0.80),  # worst false positive (FAIL)
        ("b", 0, 192, 0, 0, 0, 0, 0, 0.02),
        ("b", 0, 256, 0, 0, 0, 0, 0, 0.01),
        ("c", 0, 0, 1, 0, 0, 50, 0, 0.25),  # class 3, <64 px, missed; image c missed entirely
        ("c", 0, 64, 0, 0, 0, 0, 0, 0.15),
        ("c", 0, 128, 0, 0, 0, 0, 0, 0.05),
        ("c", 0, 192, 0, 0, 0, 0, 0, 0.05),
        ("c", 0, 256, 0, 0, 0, 0, 0, 0.05),
        ("d", 0, 0, 0, 0, 0, 0, 0, 0.40),
        ("d", 0, 64, 0, 0, 0, 0, 0, 0.01),
        ("d", 0, 128, 0, 0, 0, 0, 0, 0.01),
        ("d", 0, 192, 0, 0, 0, 0, 0, 0.01),
        ("d", 0, 256, 0, 0, 0, 0, 0, 0.01),
    ]
    rows = pd.DataFrame(table, columns=["image_id", "y", "x", "label", "px_class_1", "px_class_2",
                                        "px_class_3", "px_class_4", "score"])
    rows["size"] = SIZE
    rows["split"] = "test"
    rows["classes"] = ["" if not r.label else str(1 + int(np.argmax(r[4:8].to_numpy()))) for _, r in rows.iterrows()]
    rows.index = rows.index + 100  # index rows keep their labels from the full index
    return rows.drop(columns="score"), rows["score"].to_numpy()


THRESHOLDS = Thresholds(t_pass=0.3, t_fail=0.7, recall_at_pass=1.0, recall_bound=0.9, precision_at_fail=1.0,
                        specificity_at_pass=0.9, n_positives=10, n_negatives=30, bound_met=True, note="crafted")


def test_metrics_equal_scikit_learn(tmp_path: Path) -> None:
    rows, scores = crafted_split()
    report = evaluate(rows, scores, THRESHOLDS, CLASS_IDS, tmp_path)
    m = report.metrics
    y = rows["label"].to_numpy()
    flagged, failed = scores >= 0.3, scores >= 0.7
    assert m["patch_recall"] == recall_score(y, flagged) == 3 / 5
    assert m["patch_precision"] == precision_score(y, flagged) == 3 / 6
    assert m["patch_specificity"] == recall_score(y, flagged, pos_label=0) == 12 / 15
    assert m["patch_f2"] == pytest.approx(fbeta_score(y, flagged, beta=2))
    assert m["patch_pr_auc"] == pytest.approx(average_precision_score(y, scores))
    assert m["patch_roc_auc"] == pytest.approx(roc_auc_score(y, scores))
    assert m["patch_fail_recall"] == recall_score(y, failed) == 2 / 5
    assert m["patch_fail_precision"] == precision_score(y, failed) == 2 / 3
    assert report.confusion["patch_at_pass"] == confusion_matrix(y, flagged).tolist() == [[12, 3], [2, 3]]
    assert report.confusion["patch_at_fail"] == confusion_matrix(y, failed).tolist()
    assert (m["patch_pass_rate"], m["patch_hold_rate"], m["patch_fail_rate"]) == (14 / 20, 3 / 20, 3 / 20)

    # image level: score = worst patch, defective = any defect pixel (a: 0.90, b: 0.95, c: 0.25, d: 0.40)
    image_y, image_s = np.array([1, 1, 1, 0]), np.array([0.90, 0.95, 0.25, 0.40])
    assert report.images["image_id"].tolist() == ["a", "b", "c", "d"]
    assert report.images["decision"].tolist() == ["FAIL", "FAIL", "PASS", "HOLD"]
    assert m["image_recall"] == recall_score(image_y, image_s >= 0.3) == 2 / 3
    assert m["image_specificity"] == 0.0
    assert m["image_roc_auc"] == pytest.approx(roc_auc_score(image_y, image_s))
    assert m["image_pr_auc"] == pytest.approx(average_precision_score(image_y, image_s))
    assert m["image_missed"] == 1.0


def test_breakdown_by_class_and_size(tmp_path: Path) -> None:
    rows, scores = crafted_split()
    m = evaluate(rows, scores, THRESHOLDS, CLASS_IDS, tmp_path).metrics
    assert (m["recall_class_1"], m["recall_class_2"], m["recall_class_3"], m["recall_class_4"]) == (0.0, 1.0, 0.5, 1.0)
    assert m["n_class_3"] == 2.0
    assert (m["recall_size_lt64"], m["recall_size_64_1k"], m["recall_size_1k_10k"], m["recall_size_gt10k"]) == (
        0.0, 1.0, 1.0, 1.0)
    assert m["n_size_lt64"] == 2.0


def test_missed_defects_are_listed_with_image_position_and_score(tmp_path: Path) -> None:
    rows, scores = crafted_split()
    report = evaluate(rows, scores, THRESHOLDS, CLASS_IDS, tmp_path)
    assert report.missed[["image_id", "y", "x", "score"]].values.tolist() == [["a", 0, 0, 0.20], ["c", 0, 0, 0.25]]
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    assert saved["missed"][0]["image_id"] == "a"
    assert saved["metrics"]["patch_recall"] == 0.6
    assert saved["thresholds"]["t_pass"] == 0.3


def test_plots_and_galleries_are_written(tmp_path: Path) -> None:
    rows, scores = crafted_split()
    loaded: list[str] = []

    def load_image(image_id: str) -> np.ndarray:
        loaded.append(image_id)
        return np.full((SIZE, 5 * SIZE), 100, dtype=np.uint8)

    report = evaluate(rows, scores, THRESHOLDS, CLASS_IDS, tmp_path, load_image=load_image)
    assert set(report.plots) == {"pr_curve", "roc_curve", "score_histogram", "threshold_sweep",
                                 "false_negatives", "false_positives"}
    for path in report.plots.values():
        assert path.parent == tmp_path and path.read_bytes()[:4] == b"\x89PNG"
    assert sorted(set(loaded)) == ["a", "b", "c", "d"]


def _red_pixels(path: Path) -> int:
    from matplotlib.image import imread

    rgb = imread(path)[..., :3]
    return int(((rgb[..., 0] > 0.8) & (rgb[..., 1] < 0.3) & (rgb[..., 2] < 0.3)).sum())


def test_missed_defect_gallery_outlines_the_defect(tmp_path: Path) -> None:
    rows, scores = crafted_split()
    image = np.full((SIZE, 5 * SIZE), 100, dtype=np.uint8)

    def load_masks(image_id: str) -> np.ndarray:
        masks = np.zeros((len(CLASS_IDS), SIZE, 5 * SIZE), dtype=bool)
        masks[0, 20:30, 10:20] = True  # inside the first patch of every image: the missed ones of a and c
        return masks

    outlined = evaluate(rows, scores, THRESHOLDS, CLASS_IDS, tmp_path / "outlined", load_image=lambda _: image,
                        load_masks=load_masks, class_names={1: "pits", 2: "marks", 3: "scratches", 4: "patches"})
    plain = evaluate(rows, scores, THRESHOLDS, CLASS_IDS, tmp_path / "plain", load_image=lambda _: image)
    assert _red_pixels(outlined.plots["false_negatives"]) > 20
    assert _red_pixels(plain.plots["false_negatives"]) == 0


def test_both_galleries_are_written_when_empty(tmp_path: Path) -> None:
    rows, scores = crafted_split()
    strict = Thresholds(t_pass=0.85, t_fail=0.9, recall_at_pass=1.0, recall_bound=0.9, precision_at_fail=1.0,
                        specificity_at_pass=1.0, n_positives=10, n_negatives=30, bound_met=True, note="crafted")
    catches_all = Thresholds(t_pass=0.19, t_fail=0.9, recall_at_pass=1.0, recall_bound=0.9, precision_at_fail=1.0,
                             specificity_at_pass=0.5, n_positives=10, n_negatives=30, bound_met=True, note="crafted")
    image = np.full((SIZE, 5 * SIZE), 100, dtype=np.uint8)
    no_false_alarm = evaluate(rows, scores, strict, CLASS_IDS, tmp_path / "a", load_image=lambda _: image)
    nothing_missed = evaluate(rows, scores, catches_all, CLASS_IDS, tmp_path / "b", load_image=lambda _: image)
    assert no_false_alarm.metrics["patch_precision"] == 1.0 and nothing_missed.metrics["patch_recall"] == 1.0
    for report in (no_false_alarm, nothing_missed):
        assert {"false_negatives", "false_positives"} <= set(report.plots)
        assert all(report.plots[name].read_bytes()[:4] == b"\x89PNG" for name in ("false_negatives", "false_positives"))


def test_thresholds_chosen_on_validation_evaluate_cleanly(tmp_path: Path) -> None:
    rows, scores = crafted_split()
    t = choose_thresholds(rows["label"], scores, ThresholdSettings(recall_target=0.8, confidence=None))
    report = evaluate(rows, scores, t, CLASS_IDS, tmp_path)
    assert report.metrics["patch_recall"] >= 0.8
    assert report.metrics["t_pass"] == t.t_pass == 0.25


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r, s: (r.drop(columns="px_class_4"), s), "lack columns"),
        (lambda r, s: (r, s[:-1]), "20 index rows but 19 scores"),
        (lambda r, s: (r.assign(label=0), s), "needs both"),
        (lambda r, s: (r, np.where(s > 0.9, np.nan, s)), "non-finite"),
    ],
)
def test_bad_inputs_raise_clear_errors(tmp_path: Path, mutate, message: str) -> None:
    rows, scores = mutate(*crafted_split())
    with pytest.raises(ValueError, match=message):
        evaluate(rows, scores, THRESHOLDS, CLASS_IDS, tmp_path)
