"""Evidently drift report of a production window against the reference set, and its verdict."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from steelqc.config import MonitoringSettings
from steelqc.monitoring.features import FEATURE_COLUMNS, SCORE_COLUMN, MonitoringDataError, embedding_columns
from steelqc.novelty import novelty_rise_reasons

EMBEDDINGS_NAME = "embedding"
# Embeddings drift when more than this share of their PCA components drifted (Evidently's ratio default).
_EMBEDDING_DRIFTED_SHARE = 0.2


@dataclass
class DriftResult:
    """What the drift report found; ``summary()`` is the JSON written beside the HTML report."""

    drift_detected: bool
    drifted_share: float
    drift_share_threshold: float
    drifted_columns: list[str]
    feature_scores: dict[str, float]
    feature_methods: dict[str, str]
    score_drift: bool
    score_drift_score: float
    embedding_drift: bool | None
    embedding_drift_score: float | None
    n_reference: int
    n_current: int
    html_path: Path
    json_path: Path
    reasons: list[str] = field(default_factory=list)  # why drift was declared; empty when it was not
    novel_share_by_day: dict[str, float] = field(default_factory=dict)  # novelty guard: share of novel patches
    notes: list[str] = field(default_factory=list)  # caveats, e.g. embeddings not compared

    def summary(self) -> dict[str, object]:
        data = asdict(self)
        data["html_path"], data["json_path"] = str(self.html_path), str(self.json_path)
        return data

    def metrics(self) -> dict[str, float]:
        """Flat numeric metrics for MLflow."""
        metrics = {
            "drift_detected": float(self.drift_detected),
            "drifted_share": self.drifted_share,
            "score_drift": float(self.score_drift),
            "score_drift_score": self.score_drift_score,
            "n_reference": float(self.n_reference),
            "n_current": float(self.n_current),
        }
        metrics.update({f"drift_score_{k}": v for k, v in self.feature_scores.items()})
        if self.novel_share_by_day:
            metrics["novel_share_max_day"] = max(self.novel_share_by_day.values())
        if self.embedding_drift_score is not None:
            metrics["embedding_drift_score"] = self.embedding_drift_score
            metrics["embedding_drift"] = float(bool(self.embedding_drift))
        return metrics


def _check_columns(frame: pd.DataFrame, name: str) -> None:
    if frame.empty:
        raise MonitoringDataError(f"{name} has no rows", file=name)
    missing = [c for c in (SCORE_COLUMN, *FEATURE_COLUMNS) if c not in frame.columns]
    if missing:
        raise MonitoringDataError(f"{name} lacks columns {missing}", file=name)


def drift_report(
    reference: pd.DataFrame, current: pd.DataFrame, out_dir: str | Path, settings: MonitoringSettings
) -> DriftResult:
    """Compare a production window with the reference; write ``drift_report.html`` and ``drift_summary.json``.

    Drift is detected when the share of drifted columns (features and score, each judged by
    ``settings.drift_method`` at ``settings.drift_threshold``) reaches ``settings.drift_share``, or when
    more than 20% of the embedding's PCA components drifted by the same test (Evidently's ratio method).
    The default test is an effect size (Wasserstein distance in reference standard deviations), not a
    p-value, and the embeddings are not judged by a classifier: patches of one strip are correlated, so
    both flag ordinary strip-to-strip variation of a small window as drift. Embeddings are compared only
    when both frames carry the same reduced components.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift
    from evidently.metrics.embeddings import RatioDriftMethod
    from evidently.presets import DataDriftPreset

    _check_columns(reference, "reference set")
    _check_columns(current, "production patch log")
    columns = [*FEATURE_COLUMNS, SCORE_COLUMN]
    emb_cols = embedding_columns(reference)
    use_embeddings = len(emb_cols) >= 2 and emb_cols == embedding_columns(current)
    notes = [] if use_embeddings else ["embeddings not compared: absent or different components in the two sets"]
    keep = columns + (emb_cols if use_embeddings else [])
    definition = DataDefinition(
        numerical_columns=keep, embeddings={EMBEDDINGS_NAME: emb_cols} if use_embeddings else None
    )
    metrics: list[object] = [
        DataDriftPreset(
            columns=columns,
            drift_share=settings.drift_share,
            method=settings.drift_method,
            threshold=settings.drift_threshold,
        )
    ]
    if use_embeddings:
        metrics.append(
            EmbeddingsDrift(
                embeddings_name=EMBEDDINGS_NAME,
                drift_method=RatioDriftMethod(
                    component_stattest=settings.drift_method,
                    component_stattest_threshold=settings.drift_threshold,
                    threshold=_EMBEDDING_DRIFTED_SHARE,
                ),
            )
        )
    # Evidently plots embeddings with scikit-learn's t-SNE, whose OpenMP threads spin against each other
    # on a busy machine (22 s instead of 2 s for 200 rows on 2 shared cores); one thread is the fast path.
    with threadpool_limits(limits=1):
        snapshot = Report(metrics, include_tests=True).run(
            current_data=Dataset.from_pandas(current[keep].astype(np.float64), data_definition=definition),
            reference_data=Dataset.from_pandas(reference[keep].astype(np.float64), data_definition=definition),
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    html_path, json_path = out / "drift_report.html", out / "drift_summary.json"
    snapshot.save_html(str(html_path))
    result = _summarise(snapshot.dict(), settings.drift_share, len(reference), len(current), html_path, json_path)
    result.notes = notes
    result.novel_share_by_day, novelty_reasons = novelty_rise_reasons(reference, current, settings.novel_share_rise)
    result.reasons += novelty_reasons
    result.drift_detected = result.drift_detected or bool(novelty_reasons)
    json_path.write_text(json.dumps(result.summary(), indent=2))
    return result


def _summarise(
    report: dict, drift_share: float, n_reference: int, n_current: int, html_path: Path, json_path: Path
) -> DriftResult:
    """Read Evidently's snapshot dict: per-column scores from ``ValueDrift``, verdicts from its tests."""
    scores: dict[str, float] = {}
    methods: dict[str, str] = {}
    share = 0.0
    embedding_score: float | None = None
    for metric in report["metrics"]:
        config = metric["config"]
        kind = config["type"].rsplit(":", 1)[-1]
        if kind == "ValueDrift":
            scores[config["column"]] = float(metric["value"])
            methods[config["column"]] = str(config.get("method"))
        elif kind == "DriftedColumnsCount":
            share = float(metric["value"]["share"])
        elif kind == "EmbeddingsDrift":
            embedding_score = float(metric["value"])
    drifted = sorted(
        test["metric_config"]["params"]["column"]
        for test in report.get("tests", [])
        if test["metric_config"]["params"]["type"].endswith("ValueDrift") and test["status"] == "FAIL"
    )
    embedding_drift = None if embedding_score is None else embedding_score > _EMBEDDING_DRIFTED_SHARE
    reasons = []
    if share >= drift_share:
        reasons.append(f"{share:.0%} of columns drifted (threshold {drift_share:.0%}): {', '.join(drifted)}")
    if embedding_drift:
        reasons.append(
            f"{embedding_score:.0%} of embedding components drifted (threshold {_EMBEDDING_DRIFTED_SHARE:.0%})"
        )
    return DriftResult(
        drift_detected=share >= drift_share or bool(embedding_drift),
        drifted_share=share,
        drift_share_threshold=drift_share,
        drifted_columns=drifted,
        feature_scores={k: v for k, v in scores.items() if k != SCORE_COLUMN},
        feature_methods=methods,
        score_drift=SCORE_COLUMN in drifted,
        score_drift_score=scores.get(SCORE_COLUMN, float("nan")),
        embedding_drift=embedding_drift,
        embedding_drift_score=embedding_score,
        n_reference=n_reference,
        n_current=n_current,
        html_path=html_path,
        json_path=json_path,
        reasons=reasons,
    )
