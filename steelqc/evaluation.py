"""Test-split evaluation at patch and image level, every number from scikit-learn, plus the plots QA looks at.

"Flagged" means not PASS (score ≥ ``t_pass``): recall, precision, specificity and F2 are measured there,
because a HOLD still stops the strip for a human. The same metrics at ``t_fail`` show what would be
rejected automatically. An image's score is its worst patch's; an image is defective when any of its
patches contains defect pixels. Plots are drawn on standalone ``Figure`` objects (Agg, no pyplot state).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    fbeta_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from steelqc.thresholds import FAIL, HOLD, PASS, Thresholds, decide

SIZE_BUCKETS = {"lt64": (0, 64), "64_1k": (64, 1_000), "1k_10k": (1_000, 10_000), "gt10k": (10_000, np.inf)}
GALLERY_MAX = 24
#: A zoomed panel shows recall from at most this value up (lower when the operating point is lower).
RECALL_ZOOM = 0.8
REQUIRED_COLUMNS = ("image_id", "y", "x", "size", "label")


@dataclass
class EvaluationReport:
    """Flat MLflow-ready ``metrics``, confusion matrices ``[[tn, fp], [fn, tp]]``, missed defects, plot paths."""

    metrics: dict[str, float]
    confusion: dict[str, list[list[int]]]
    missed: pd.DataFrame
    images: pd.DataFrame
    thresholds: Thresholds
    plots: dict[str, Path] = field(default_factory=dict)

    def to_json(self, path: str | Path | None = None) -> str:
        """The whole report as JSON (written to ``path`` when given)."""
        text = json.dumps(
            {
                "metrics": self.metrics,
                "confusion": self.confusion,
                "thresholds": self.thresholds.to_dict(),
                "missed": self.missed.to_dict(orient="records"),
                "plots": {name: str(p) for name, p in self.plots.items()},
            },
            indent=1,
        )
        if path is not None:
            Path(path).write_text(text)
        return text


def _check_inputs(rows: pd.DataFrame, scores: np.ndarray, class_ids: Sequence[int]) -> None:
    px_columns = [f"px_class_{k}" for k in class_ids]
    missing = [c for c in (*REQUIRED_COLUMNS, *px_columns) if c not in rows.columns]
    if missing:
        raise ValueError(f"index rows lack columns {missing}")
    if len(rows) != scores.size:
        raise ValueError(f"{len(rows)} index rows but {scores.size} scores")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"scores contain {int(np.sum(~np.isfinite(scores)))} non-finite values")


def _level_metrics(prefix: str, y: np.ndarray, scores: np.ndarray, t: Thresholds) -> tuple[dict[str, float], dict]:
    """Threshold-free and operating-point metrics of one level (``patch`` or ``image``)."""
    if y.all() or not y.any():
        raise ValueError(f"{prefix} level of the test split needs both defective and clean examples")
    flagged, failed = (scores >= t.t_pass).astype(int), (scores >= t.t_fail).astype(int)
    decisions = decide(scores, t)
    metrics = {
        f"{prefix}_n": float(y.size),
        f"{prefix}_n_defective": float(y.sum()),
        f"{prefix}_pr_auc": average_precision_score(y, scores),
        f"{prefix}_roc_auc": roc_auc_score(y, scores),
        f"{prefix}_recall": recall_score(y, flagged),
        f"{prefix}_precision": precision_score(y, flagged, zero_division=0.0),
        f"{prefix}_specificity": recall_score(y, flagged, pos_label=0),
        f"{prefix}_f2": fbeta_score(y, flagged, beta=2, zero_division=0.0),
        f"{prefix}_fail_recall": recall_score(y, failed),
        f"{prefix}_fail_precision": precision_score(y, failed, zero_division=0.0),
        f"{prefix}_fail_specificity": recall_score(y, failed, pos_label=0),
        **{f"{prefix}_{d.lower()}_rate": float(np.mean(decisions == d)) for d in (PASS, HOLD, FAIL)},
    }
    confusion = {
        f"{prefix}_at_pass": confusion_matrix(y, flagged, labels=[0, 1]).tolist(),
        f"{prefix}_at_fail": confusion_matrix(y, failed, labels=[0, 1]).tolist(),
    }
    metrics[f"{prefix}_missed"] = float(confusion[f"{prefix}_at_pass"][1][0])
    return {k: float(v) for k, v in metrics.items()}, confusion


def mode_agreement(
    y: np.ndarray, strip_scores: np.ndarray, patch_scores: np.ndarray, thresholds: Thresholds
) -> dict[str, float]:
    """How a strip-mode model's decisions compare with the same model in patch mode on the same patches: the
    share of equal PASS / HOLD / FAIL decisions, and recall and specificity (at ``t_pass``) of both modes."""
    if strip_scores.shape != patch_scores.shape:
        raise ValueError(f"{strip_scores.size} strip-mode scores but {patch_scores.size} patch-mode scores")
    both = {"strip_mode": strip_scores, "patches_mode": patch_scores}
    metrics = {"mode_agreement": float(np.mean(decide(strip_scores, thresholds) == decide(patch_scores, thresholds)))}
    for mode, scores in both.items():
        flagged = (scores >= thresholds.t_pass).astype(int)
        metrics[f"{mode}_patch_recall"] = float(recall_score(y, flagged, zero_division=0.0))
        metrics[f"{mode}_patch_specificity"] = float(recall_score(y, flagged, pos_label=0, zero_division=0.0))
    metrics["mode_max_abs_score_diff"] = float(np.max(np.abs(strip_scores - patch_scores))) if y.size else 0.0
    return metrics


def _recall_of(mask: np.ndarray, y: np.ndarray, flagged: np.ndarray) -> float:
    return float(recall_score(y[mask], flagged[mask]))


def _breakdown(rows: pd.DataFrame, y: np.ndarray, flagged: np.ndarray, class_ids: Sequence[int]) -> dict[str, float]:
    """Recall per defect class and per defect size (defect pixels in the patch), over defective patches."""
    metrics: dict[str, float] = {}
    positive = y == 1
    for k in class_ids:
        mask = positive & (rows[f"px_class_{k}"].to_numpy() > 0)
        metrics[f"n_class_{k}"] = float(mask.sum())
        if mask.any():
            metrics[f"recall_class_{k}"] = _recall_of(mask, y, flagged)
    defect_px = rows[[f"px_class_{k}" for k in class_ids]].to_numpy().sum(axis=1)
    for name, (low, high) in SIZE_BUCKETS.items():
        mask = positive & (defect_px >= low) & (defect_px < high)
        metrics[f"n_size_{name}"] = float(mask.sum())
        if mask.any():
            metrics[f"recall_size_{name}"] = _recall_of(mask, y, flagged)
    return metrics


def _mark_thresholds(ax: Any, t: Thresholds) -> None:
    """Vertical ``t_pass``/``t_fail`` lines, named at the top of the axes as well as in the legend."""
    marks = [(t.t_pass, "t_pass", "tab:orange")] + ([(t.t_fail, "t_fail", "tab:red")] if t.t_fail <= 1.0 else [])
    for value, name, colour in marks:
        ax.axvline(value, color=colour, linestyle="--", linewidth=1.5, label=f"{name} {value:.4f}")
        ax.annotate(name, (value, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                    textcoords="offset points", color=colour, fontsize=8, fontweight="bold", annotation_clip=True)


def _legend_outside(fig: Figure, ax: Any) -> None:
    """One legend for the figure, right of the axes, so it never hides a curve."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=8)


def _save(fig: Figure, out_dir: Path, name: str) -> Path:
    path = out_dir / f"{name}.png"
    fig.savefig(path, dpi=100)
    return path


def _zoom_floor(recall_at_pass: float) -> float:
    """Lowest recall shown in a zoomed panel: below the operating point, and never above ``RECALL_ZOOM``."""
    return float(np.clip(min(RECALL_ZOOM, recall_at_pass - 0.05), 0.0, RECALL_ZOOM))


def _pr_curve_plot(levels: dict[str, tuple[np.ndarray, np.ndarray]], t: Thresholds, split: str,
                   out_dir: Path) -> Path:
    """PR curves of both levels, whole and zoomed to high recall, with the operating points marked."""
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    whole, zoom = fig.subplots(1, 2)
    lowest = 1.0
    for (name, (y, s)), colour in zip(levels.items(), ("tab:blue", "tab:green"), strict=False):
        precision, recall, _ = precision_recall_curve(y, s)
        ap = average_precision_score(y, s)
        for ax in (whole, zoom):
            ax.step(recall, precision, where="post", color=colour, label=f"{name} (AP {ap:.3f})")
        for threshold, marker, point in ((t.t_pass, "o", "t_pass"), (t.t_fail, "s", "t_fail")):
            flagged = s >= threshold
            if not flagged.any():
                continue
            r, p = recall_score(y, flagged), precision_score(y, flagged)
            if point == "t_pass":
                lowest = min(lowest, r)
            for ax in (whole, zoom):
                ax.plot(r, p, marker, markersize=9, markerfacecolor="white", markeredgewidth=2, color=colour,
                        label=f"{name} at {point} (R {r:.3f}, P {p:.3f})")
    floor = _zoom_floor(lowest)
    whole.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.02), title="whole curve")
    zoom.set(xlabel="recall", ylabel="precision", xlim=(floor, 1.005), ylim=(0, 1.02),
             title=f"zoomed: recall ≥ {floor:.2f}")
    for ax in (whole, zoom):
        ax.grid(alpha=0.3)
    fig.suptitle(f"Precision–recall, {split} split (○ t_pass, □ t_fail)")
    _legend_outside(fig, whole)
    return _save(fig, out_dir, "pr_curve")


def _roc_plot(levels: dict[str, tuple[np.ndarray, np.ndarray]], split: str, out_dir: Path) -> Path:
    fig = Figure(figsize=(7.5, 5), layout="constrained")
    ax = fig.subplots()
    for name, (y, s) in levels.items():
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, s):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate (1 − specificity)", ylabel="recall", xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title(f"ROC, {split} split")
    _legend_outside(fig, ax)
    return _save(fig, out_dir, "roc_curve")


def _threshold_sweep_plot(y: np.ndarray, s: np.ndarray, t: Thresholds, split: str, out_dir: Path) -> Path:
    """Patch recall, precision and specificity against the threshold: all of [0, 1], then the high-recall range."""
    precision, recall, pr_thresholds = precision_recall_curve(y, s)
    fpr, _, roc_thresholds = roc_curve(y, s, drop_intermediate=False)
    finite = np.isfinite(roc_thresholds)  # roc_curve's first threshold is +inf (nothing flagged)
    order = np.argsort(roc_thresholds[finite])
    floor = _zoom_floor(float(recall_score(y, s >= t.t_pass)))
    # recall falls as the threshold rises: zoom to where it falls from 1.0 to the floor, t_pass included
    catches_all = pr_thresholds[recall[:-1] >= 1.0]  # up to the lowest defect score
    low = min(float(catches_all.max()) if catches_all.size else t.t_pass, t.t_pass)
    high = max(float(pr_thresholds[recall[:-1] >= floor].max(initial=t.t_pass)), t.t_pass)
    pad = max(0.1 * (high - low), 1e-3)
    low, high = max(0.0, low - pad), min(1.0, high + pad)
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    whole, zoom = fig.subplots(1, 2)
    for ax in (whole, zoom):
        # a metric at candidate c_i holds for every threshold in (c_{i-1}, c_i]: steps drawn "pre"
        ax.step(pr_thresholds, recall[:-1], where="pre", label="recall")
        ax.step(pr_thresholds, precision[:-1], where="pre", label="precision")
        ax.step(roc_thresholds[finite][order], (1.0 - fpr[finite])[order], where="pre", label="specificity")
        _mark_thresholds(ax, t)
        ax.grid(alpha=0.3)
    whole.set(xlabel="threshold (flagged when score ≥ threshold)", ylabel="patch level", xlim=(0, 1),
              ylim=(0, 1.02), title="all thresholds")
    zoom.set(xlabel="threshold", xlim=(low, high), ylim=(floor - 0.02, 1.005),
             title=f"zoomed: thresholds where recall ≥ {floor:.2f}")
    fig.suptitle(f"Threshold sweep, {split} split, patch level")
    _legend_outside(fig, whole)
    return _save(fig, out_dir, "threshold_sweep")


def _class_label(k: int, class_names: Mapping[int, str]) -> str:
    name = class_names.get(k)
    return f"class {k} ({name})" if name and name != str(k) else f"class {k}"


def _histogram_plot(rows: pd.DataFrame, y: np.ndarray, s: np.ndarray, class_names: Mapping[int, str],
                    t: Thresholds, split: str, out_dir: Path) -> Path:
    fig = Figure(figsize=(8.5, 5), layout="constrained")
    ax = fig.subplots()
    bins = np.linspace(0.0, 1.0, 41).tolist()
    ax.hist(s[y == 0], bins=bins, histtype="step", label="clean", log=True)
    for k in class_names:
        mask = (y == 1) & (rows[f"px_class_{k}"].to_numpy() > 0)
        if mask.any():
            ax.hist(s[mask], bins=bins, histtype="step", label=_class_label(k, class_names), log=True)
    _mark_thresholds(ax, t)
    ax.set(xlabel="patch score", ylabel="patches (log)")
    ax.set_title(f"Patch scores by class, {split} split")
    _legend_outside(fig, ax)
    return _save(fig, out_dir, "score_histogram")


def _empty_gallery(message: str, out_dir: Path, name: str) -> Path:
    fig = Figure(figsize=(6, 1.2))
    fig.text(0.5, 0.5, message, ha="center", va="center", fontsize=11)
    return _save(fig, out_dir, name)


def _gallery(patches: pd.DataFrame, load_image: Callable[[str], np.ndarray],
             load_masks: Callable[[str], np.ndarray] | None, title: str, out_dir: Path, name: str,
             *, empty: str) -> Path:
    """Crops of the listed patches, worst first; with ``load_masks`` each defect is outlined in red. No patches:
    a figure that says ``empty``."""
    if patches.empty:
        return _empty_gallery(empty, out_dir, name)
    cols = min(6, len(patches))
    nrows = -(-len(patches) // cols)
    fig = Figure(figsize=(max(2.2 * cols, 6.0), 2.5 * nrows + 0.4), layout="constrained")  # room for the title
    axes = np.atleast_1d(fig.subplots(nrows, cols)).ravel()
    images: dict[str, np.ndarray] = {}
    defects: dict[str, np.ndarray] = {}
    for ax, row in zip(axes, patches.itertuples(index=False), strict=False):
        if row.image_id not in images:
            images[row.image_id] = load_image(row.image_id)
            if load_masks is not None:
                defects[row.image_id] = np.any(load_masks(row.image_id), axis=0)
        window = (slice(row.y, row.y + row.size), slice(row.x, row.x + row.size))
        ax.imshow(images[row.image_id][window], cmap="gray", vmin=0, vmax=255)
        defect = defects.get(row.image_id)
        if defect is not None and defect[window].any():
            # padded by one clean pixel so a defect running off the crop gets a closed outline at the edge
            inside = np.pad(defect[window], 1).astype(float)
            grid_y, grid_x = np.arange(-1, inside.shape[0] - 1), np.arange(-1, inside.shape[1] - 1)
            ax.contour(grid_x, grid_y, inside, levels=[0.5], colors="red", linewidths=1.2)
        classes = f" cl {row.classes}" if getattr(row, "classes", "") else ""
        ax.set_title(f"{row.image_id}\n({row.y},{row.x}) {row.score:.3f}{classes}", fontsize=7)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title)
    return _save(fig, out_dir, name)


def evaluate(
    index_rows: pd.DataFrame,
    scores: np.ndarray,
    thresholds: Thresholds,
    class_ids: Sequence[int],
    out_dir: str | Path,
    *,
    load_image: Callable[[str], np.ndarray] | None = None,
    load_masks: Callable[[str], np.ndarray] | None = None,
    class_names: Mapping[int, str] | None = None,
    split: str = "test",
    patch_mode_scores: np.ndarray | None = None,
) -> EvaluationReport:
    """Evaluate ``split`` scores (aligned with ``index_rows``) at the chosen thresholds; plots go to ``out_dir``.

    ``load_image(image_id) -> uint8 (H, W)`` enables the galleries of missed defects and worst false positives
    (both always written then, saying so when there are none); ``load_masks(image_id) -> bool (classes, H, W)``
    outlines the defects in them. ``class_names`` ({id: name}) and ``split`` label the plots.
    ``patch_mode_scores`` (a strip-mode model's scores of the same patches in patch mode) adds
    :func:`mode_agreement`'s metrics.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    _check_inputs(index_rows, s, class_ids)
    rows = index_rows.reset_index(drop=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    y = rows["label"].to_numpy().astype(int)
    flagged = (s >= thresholds.t_pass).astype(int)

    patch_metrics, confusion = _level_metrics("patch", y, s, thresholds)
    px = rows[[f"px_class_{k}" for k in class_ids]].to_numpy()
    images = (
        pd.DataFrame({"image_id": rows["image_id"], "score": s, "defect": (px > 0).any(axis=1)})
        .groupby("image_id", sort=True)
        .agg(score=("score", "max"), defect=("defect", "any"))
        .reset_index()
    )
    images["decision"] = decide(images["score"].to_numpy(), thresholds)
    image_y, image_s = images["defect"].to_numpy().astype(int), images["score"].to_numpy()
    image_metrics, image_confusion = _level_metrics("image", image_y, image_s, thresholds)
    metrics = {
        **patch_metrics,
        **image_metrics,
        **_breakdown(rows, y, flagged, class_ids),
        "t_pass": thresholds.t_pass,
        "t_fail": thresholds.t_fail,
        **(mode_agreement(y, s, np.asarray(patch_mode_scores), thresholds) if patch_mode_scores is not None else {}),
    }

    scored = rows.assign(score=s, defect_px=px.sum(axis=1))
    columns = ["image_id", "y", "x", "size", "score", "defect_px"] + (["classes"] if "classes" in rows else [])
    missed = scored.loc[(y == 1) & (flagged == 0), columns].sort_values("score").reset_index(drop=True)
    false_pos = scored.loc[(y == 0) & (flagged == 1), columns].sort_values("score", ascending=False)

    levels = {"patch": (y, s), "image": (image_y, image_s)}
    names = {k: (class_names or {}).get(k, str(k)) for k in class_ids}
    plots = {
        "pr_curve": _pr_curve_plot(levels, thresholds, split, out),
        "roc_curve": _roc_plot(levels, split, out),
        "threshold_sweep": _threshold_sweep_plot(y, s, thresholds, split, out),
        "score_histogram": _histogram_plot(rows, y, s, names, thresholds, split, out),
    }
    if load_image is not None:
        at_pass = f"at t_pass {thresholds.t_pass:.4f}"
        plots["false_negatives"] = _gallery(
            missed.head(GALLERY_MAX), load_image, load_masks,
            f"Missed defects, {split} split: {len(missed)} {at_pass} (defect outlined)", out, "false_negatives",
            empty=f"No missed defects on the {split} split {at_pass}",
        )  # fmt: skip
        plots["false_positives"] = _gallery(
            false_pos.head(GALLERY_MAX), load_image, None,
            f"Worst false positives, {split} split: {len(false_pos)} clean patches {at_pass}", out, "false_positives",
            empty=f"No false positives on the {split} split {at_pass}",
        )  # fmt: skip
    report = EvaluationReport(
        metrics=metrics, confusion={**confusion, **image_confusion}, missed=missed, images=images,
        thresholds=thresholds, plots=plots,
    )
    report.to_json(out / "evaluation.json")
    return report
