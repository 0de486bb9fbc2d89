"""One training job end to end, without Prefect: the stage functions and their thin composition.

dataset → validate → patch index → train → scores on val → thresholds → scores on test → evaluate →
MLflow run → registered version. Each stage is its own function so the Prefect flow can wrap the very
same calls in tasks; :func:`run_training_job` only strings them together inside one MLflow run.
The order makes the seed system's mistakes impossible: thresholds see validation scores only, the
test split is scored once, after the thresholds are fixed, and only to evaluate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import RunStatus
from mlflow.entities.model_registry import ModelVersion

from steelqc.config import PATCHES, STRIP, Settings
from steelqc.data.dataset import Dataset
from steelqc.evaluation import EvaluationReport, evaluate
from steelqc.inference import Inspector
from steelqc.monitoring import log_reference
from steelqc.novelty import NoveltyBank, fit_guard
from steelqc.patches import build_patch_index, write_index
from steelqc.pyfunc import load_inspector, log_pyfunc_model
from steelqc.registry import register_version, version_tags
from steelqc.strip import keras_strip_model, strip_rows
from steelqc.thresholds import Thresholds, choose_thresholds
from steelqc.tracking import (
    DESCRIPTION_TAG,
    TAG_PROCESS,
    TRAIN,
    VAL,
    configure_tracking,
    ensure_experiment,
    fail_abandoned_runs,
    flatten_settings,
    git_commit,
    log_epoch_metrics,
    log_evaluation,
    log_lineage,
    process_identity,
    run_description,
    run_name,
)
from steelqc.training import TrainingRecord, TrainResult, predict_split, train_model
from steelqc.validation import ValidationResult, validate_dataset
from steelqc.workspace import default_work_dir, disk_full_names, require_writable

#: Metrics printed by the CLI and returned to callers: recall first, never without precision and specificity.
HEADLINE_METRICS = (
    "patch_recall",
    "patch_precision",
    "patch_specificity",
    "patch_pr_auc",
    "image_recall",
    "image_precision",
    "image_specificity",
)
TAG_INTERRUPTED = "steelqc.interrupted"


@dataclass(frozen=True)
class TrainJobResult:
    """What one training job produced and where to find it."""

    run_id: str
    experiment_id: str
    model_uri: str
    registered_model: str
    version: str
    thresholds: Thresholds
    metrics: dict[str, float]
    work_dir: Path

    @property
    def headline(self) -> dict[str, float]:
        return headline_metrics(self.metrics)


def headline_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """The :data:`HEADLINE_METRICS` present in ``metrics``, in that order."""
    return {name: metrics[name] for name in HEADLINE_METRICS if name in metrics}



def validate(
    dataset: Dataset, settings: Settings, report_dir: Path, *, scanned: Sequence[dict[str, Any]] | None = None
) -> tuple[ValidationResult, Dataset]:
    """Run the data gate; raise :class:`~steelqc.validation.ValidationFailed` or return the clean dataset.

    ``scanned`` holds image scan records made elsewhere (a flow's fan-out), else images are scanned here.
    """
    result = validate_dataset(
        dataset, settings.validation, report_dir, workers=settings.data.image_workers, scanned=scanned
    )
    result.raise_if_failed()
    return result, result.clean(dataset)


def make_patch_index(dataset: Dataset, settings: Settings, path: Path) -> pd.DataFrame:
    """The labelled, split patch index of the clean dataset, also written to ``path`` (parquet)."""
    index = build_patch_index(dataset, settings.patches, workers=settings.data.image_workers)
    write_index(index, path)
    return index


def train(dataset: Dataset, index: pd.DataFrame, settings: Settings, checkpoint_dir: Path) -> TrainResult:
    """Two-stage training; every epoch's metrics go to the active MLflow run (start one first)."""
    return train_model(dataset, index, settings, checkpoint_dir, on_epoch_end=log_epoch_metrics)


def split_rows(index: pd.DataFrame, split: str) -> pd.DataFrame:
    """The index rows of one split, in the order the pipeline scores them."""
    return index[index["split"] == split].reset_index(drop=True)


def split_scores(model: Any, dataset: Dataset, index: pd.DataFrame, split: str, settings: Settings) -> np.ndarray:
    """Scores of a split's patches in ``settings.inference.mode``, aligned with :func:`split_rows`: thresholds and
    evaluation see the scores inspection will produce."""
    if settings.inference.mode == STRIP:
        return strip_rows(keras_strip_model(model), dataset.load_image, split_rows(index, split), settings.patches,
                          workers=settings.data.image_workers).scores  # fmt: skip
    return predict_split(model, dataset, index, split, settings)


def select_thresholds(index: pd.DataFrame, val_scores: np.ndarray, settings: Settings) -> Thresholds:
    """Operating points from *validation* labels and scores only."""
    return choose_thresholds(split_rows(index, "val")["label"].to_numpy(), val_scores, settings.thresholds)


def evaluate_test(
    dataset: Dataset,
    index: pd.DataFrame,
    test_scores: np.ndarray,
    thresholds: Thresholds,
    out_dir: Path,
    *,
    patch_mode_scores: np.ndarray | None = None,
) -> EvaluationReport:
    """Metrics, missed defects and plots on the test split at fixed thresholds (and, for a strip-mode model,
    its agreement with ``patch_mode_scores``)."""
    return evaluate(
        split_rows(index, "test"),
        test_scores,
        thresholds,
        dataset.meta.class_ids,
        out_dir,
        load_image=dataset.load_image,
        load_masks=dataset.masks,
        class_names=dataset.meta.classes,
        patch_mode_scores=patch_mode_scores,
    )


def evaluate_in_mode(
    model: Any, dataset: Dataset, index: pd.DataFrame, thresholds: Thresholds, settings: Settings, out_dir: Path
) -> EvaluationReport:
    """Score the test split once in the model's mode and evaluate; a strip-mode model is also scored in patch
    mode on the same patches, so its report states how far the two modes agree."""
    scores = split_scores(model, dataset, index, "test", settings)
    patch_mode = predict_split(model, dataset, index, "test", settings) if settings.inference.mode == STRIP else None
    return evaluate_test(dataset, index, scores, thresholds, out_dir, patch_mode_scores=patch_mode)


def log_run_start(
    settings: Settings, job: str, work_dir: Path, data: tuple[str, str], tags: Mapping[str, str] | None = None
) -> None:
    """What a training run records first, on the active run: the whole config, the job, commit and work folder,
    and a description naming the data (``data`` = dataset name and where it lives), backbone and profile.

    ``steelqc train`` and the retraining flow both call this, :func:`~steelqc.tracking.log_lineage`,
    :func:`log_training` and :func:`log_and_register`, so their runs and versions carry the same records.
    """
    mlflow.log_params(flatten_settings(settings))
    described = {DESCRIPTION_TAG: run_description(job, *data, settings)}
    mlflow.set_tags({"job": job, "git_commit": git_commit(), "work_dir": str(work_dir), **described, **(tags or {})})


def log_training(record: TrainingRecord, thresholds: Thresholds) -> None:
    """Class weights, the selected epoch and the operating points on the active run."""
    mlflow.log_params({f"class_weight.{k}": f"{v:.6f}" for k, v in record.class_weights.items()})
    mlflow.log_metrics(
        {
            f"{TRAIN}best_epoch": record.best_epoch,
            f"{TRAIN}best_stage": record.stage,
            f"{VAL}best_pr_auc": record.best_val_pr_auc,
            f"{VAL}t_pass": thresholds.t_pass,  # chosen on the validation split
            f"{VAL}t_fail": thresholds.t_fail,
            f"{VAL}recall_at_pass": thresholds.recall_at_pass,
            f"{VAL}recall_bound": thresholds.recall_bound,
            f"{VAL}specificity_at_pass": thresholds.specificity_at_pass,
        }
    )
    mlflow.set_tags({"thresholds.bound_met": str(thresholds.bound_met), "thresholds.note": thresholds.note[:5000]})
    mlflow.log_dict(thresholds.to_dict(), "thresholds.json")


def log_and_register(
    model: Any,
    thresholds: Thresholds,
    report: EvaluationReport,
    data_hash: str,
    dataset: Dataset,
    index: pd.DataFrame,
    settings: Settings,
) -> tuple[str, ModelVersion]:
    """Log the evaluation, the drift reference set, the novelty bank (``novelty.enabled``) and the pyfunc on the
    active run; register a new version.

    The reference set (patch features and reduced embeddings of the validation patches) travels with
    the version, so drift monitoring compares production against what *this* model was chosen on.
    """
    log_evaluation(report.metrics, report.to_json(), list(report.plots.values()))
    bank = log_novelty_bank(model, dataset, index, settings) if settings.novelty.enabled else None
    log_reference(model, dataset, index, settings.patches, novelty=bank, mode=settings.inference.mode,
                  workers=settings.data.image_workers)  # fmt: skip
    example = dataset.load_image(str(split_rows(index, "test")["image_id"].iloc[0]))
    info = log_pyfunc_model(model, thresholds, settings.patches, example, settings.inference.mode, novelty_bank=bank)
    tags = version_tags(report.metrics, thresholds, data_hash) | (novelty_tags(bank) if bank is not None else {})
    version = register_version(info.model_uri, settings.tracking.registered_model, tags)
    return info.model_uri, version


def log_novelty_bank(model: Any, dataset: Dataset, index: pd.DataFrame, settings: Settings) -> NoveltyBank:
    """Fit the novelty guard (bank of clean training patches, threshold on clean validation images) and record
    its size, build time and calibration on the active run (``novelty.*`` metrics, ``novelty/summary.json``).

    The bank itself travels inside the logged pyfunc (:func:`~steelqc.pyfunc.log_pyfunc_model`).
    """
    bank = fit_guard(model, dataset, index, settings.patches, settings.novelty, mode=settings.inference.mode,
                     workers=settings.data.image_workers)  # fmt: skip
    summary = bank.summary()
    numeric = {k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    mlflow.log_metrics({f"novelty.{key}": value for key, value in numeric.items()})
    assert bank.calibration is not None
    mlflow.set_tags({"novelty.bound_met": str(bank.calibration.bound_met), "novelty.note": bank.calibration.note})
    mlflow.log_dict(summary, "novelty/summary.json")
    return bank


def novelty_tags(bank: NoveltyBank) -> dict[str, str]:
    """Version tags of the novelty guard: its threshold, clean HOLD-rate bound and bank size."""
    assert bank.calibration is not None
    return {
        "novelty_threshold": f"{bank.calibration.threshold:.6f}",
        "novelty_hold_bound": f"{bank.calibration.hold_rate_bound:.6f}",
        "novelty_bank_size": str(len(bank)),
    }


def run_training_job(data_root: str, settings: Settings, *, work_dir: Path | None = None) -> TrainJobResult:
    """Train, evaluate, log and register one model on the dataset at ``data_root``.

    ``work_dir`` (default: :func:`~steelqc.workspace.default_work_dir`) holds validation reports, the patch
    index, checkpoints (calling again with the same folder resumes training) and the evaluation. Folders are
    checked writable before anything runs; an interrupted (Ctrl-C) run is closed KILLED with a tag naming the
    folder to resume from.
    """
    work = work_dir or default_work_dir(settings.state_dir)
    require_writable(settings.state_dir, "state folder")
    require_writable(work, "work folder")
    configure_tracking(settings)
    dataset = Dataset.configured(data_root, settings.data)
    experiment_id = ensure_experiment(settings, dataset.meta.name)
    fail_abandoned_runs(experiment_id, "train")
    with (
        mlflow.start_run(experiment_id=experiment_id, run_name=run_name("train", dataset.meta.name, settings)) as run,
        disk_full_names(work, "work folder"),
    ):
        try:
            log_run_start(settings, "train", work, (dataset.meta.name, dataset.root), {TAG_PROCESS: process_identity()})
            validation, clean = validate(dataset, settings, work / "validation")
            index = make_patch_index(clean, settings, work / "patch_index.parquet")
            log_lineage(validation.data_hash, validation.lineage(), index, clean.root, dataset.meta.name)
            trained = train(clean, index, settings, work / "checkpoints")
            val_scores = split_scores(trained.model, clean, index, "val", settings)
            thresholds = select_thresholds(index, val_scores, settings)
            log_training(trained, thresholds)
            report = evaluate_in_mode(trained.model, clean, index, thresholds, settings, work / "evaluation")
            model_uri, version = log_and_register(
                trained.model, thresholds, report, validation.data_hash, clean, index, settings
            )
        except KeyboardInterrupt:
            close_interrupted_run(f"resume with --work-dir {work}")
            raise
    return TrainJobResult(
        run_id=run.info.run_id,
        experiment_id=experiment_id,
        model_uri=model_uri,
        registered_model=settings.tracking.registered_model,
        version=str(version.version),
        thresholds=thresholds,
        metrics={k: float(v) for k, v in report.metrics.items() if isinstance(v, (int, float))},
        work_dir=work,
    )


def close_interrupted_run(note: str) -> None:
    """Close the active run KILLED with ``note`` (how to go on): a Ctrl-C, not a failure of the training."""
    mlflow.set_tag(TAG_INTERRUPTED, note)
    mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))


def with_model_geometry(settings: Settings, geometry: dict[str, Any]) -> Settings:
    """``settings`` with the patch size, stride, padding and inference mode a model was trained with."""
    patches = {"size": geometry["patch_size"], "stride": geometry["stride"], "pad_mode": geometry["pad_mode"]}
    inference = {"mode": geometry.get("mode", PATCHES)}
    return settings.model_copy(update={"patches": settings.patches.model_copy(update=patches),
                                       "inference": settings.inference.model_copy(update=inference)})  # fmt: skip


def _score_test_split(
    inspector: Inspector,
    thresholds: Thresholds,
    dataset: Dataset,
    index: pd.DataFrame,
    settings: Settings,
    out_dir: Path,
    *,
    with_agreement: bool,
) -> EvaluationReport:
    if with_agreement:
        return evaluate_in_mode(inspector.model, dataset, index, thresholds, settings, out_dir)
    scores = split_scores(inspector.model, dataset, index, "test", settings)
    return evaluate_test(dataset, index, scores, thresholds, out_dir)


def score_model_on_split(
    model_uri: str, dataset: Dataset, index: pd.DataFrame, settings: Settings, out_dir: Path
) -> EvaluationReport:
    """Evaluate a logged model (e.g. the champion) on an existing index's test split, with its own thresholds.

    The gate compares like with like this way: same patches, same labels as the challenger's evaluation.
    A model cut for another patch size cannot score these patches and raises ``ValueError``.
    """
    inspector, meta = load_inspector(model_uri)
    sizes = set(index["size"].unique().tolist())
    if sizes != {meta.geometry["patch_size"]}:
        raise ValueError(
            f"{model_uri} scores {meta.geometry['patch_size']}px patches but the index holds "
            f"{', '.join(f'{size}px' for size in sorted(sizes))} patches"
        )
    settings = with_model_geometry(settings, meta.geometry)
    return _score_test_split(inspector, meta.thresholds, dataset, index, settings, out_dir, with_agreement=False)


def evaluate_model(model_uri: str, data_root: str, settings: Settings, out_dir: Path) -> EvaluationReport:
    """Re-score a logged model on a dataset's test split with the model's own thresholds and geometry.

    The split is rebuilt from the validated data and ``settings.patches`` (seed and fractions), so the
    same dataset and settings give the same test images as at training time.
    """
    configure_tracking(settings)
    inspector, meta = load_inspector(model_uri)
    settings = with_model_geometry(settings, meta.geometry)
    _, clean = validate(Dataset.configured(data_root, settings.data), settings, out_dir / "validation")
    index = make_patch_index(clean, settings, out_dir / "patch_index.parquet")
    return _score_test_split(inspector, meta.thresholds, clean, index, settings, out_dir / "evaluation",
                             with_agreement=True)  # fmt: skip
