"""Class-weighted, two-stage, resumable training with checkpoint selection on validation PR-AUC.

Selection and early stopping watch ``val_pr_auc`` only: recall is trivially 1.0 for a model that flags
everything (the seed system's failure), while PR-AUC rewards ranking defects above clean patches.
Stage one trains the head on a frozen pretrained backbone (with random weights there is nothing to protect,
so the whole model trains); stage two fine-tunes the top backbone blocks at a lower learning rate,
starting from the best stage-one checkpoint. ``checkpoint_dir`` holds ``last.keras`` (with optimizer state),
``best.keras`` and ``state.json``; calling again with the same folder resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from steelqc.config import Settings
from steelqc.data.dataset import Dataset
from steelqc.input_pipeline import patch_dataset
from steelqc.model import build_model, set_backbone_trainable

MONITOR = "val_pr_auc"
BEST_FILE, LAST_FILE, STATE_FILE = "best.keras", "last.keras", "state.json"

LOG = logging.getLogger(__name__)
EpochHook = Callable[[int, dict[str, float]], None]


@dataclass
class TrainingRecord:
    """How the best checkpoint (by ``val_pr_auc``) was reached: what a run records about its training.

    No model in it, so a flow passes it between tasks as a small persisted result.
    """

    class_weights: dict[int, float]
    best_epoch: int  # 0-based history index
    best_val_pr_auc: float
    stage: int  # the stage (1 frozen, 2 fine-tune) the best epoch belongs to


@dataclass
class TrainResult(TrainingRecord):
    """The best checkpoint's model, how it was reached and the whole per-epoch history."""

    model: keras.Model
    history: dict[str, list[float]]

    def record(self) -> TrainingRecord:
        """The :class:`TrainingRecord` part alone (without model and history)."""
        return TrainingRecord(**{f.name: getattr(self, f.name) for f in fields(TrainingRecord)})


@dataclass
class _State:
    """What ``state.json`` persists between calls: enough to resume the exact schedule."""

    architecture: dict[str, Any]
    class_weights: dict[str, float] | None = None
    epochs_in_stage: dict[str, int] = field(default_factory=lambda: {"1": 0, "2": 0})
    stopped_early: list[int] = field(default_factory=list)
    wait: int = 0
    best_epoch: int = -1
    best_val_pr_auc: float | None = None
    best_stage: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)

    @property
    def epochs_done(self) -> int:
        return sum(self.epochs_in_stage.values())

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.replace(path)


def compute_class_weights(labels: np.ndarray | pd.Series) -> dict[int, float]:
    """Balanced weights ``n / (2 · n_class)`` from the training labels (scikit-learn's ``"balanced"``)."""
    y = np.asarray(labels).astype(int).ravel()
    present = set(np.unique(y).tolist())
    if present != {0, 1}:
        raise ValueError(f"training labels must contain both classes 0 and 1, found {sorted(present)}")
    weights = compute_class_weight("balanced", classes=np.array([0, 1]), y=y)
    return {0: float(weights[0]), 1: float(weights[1])}


def _compile(model: keras.Model, learning_rate: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="binary_crossentropy",
        metrics=[
            keras.metrics.AUC(curve="PR", name="pr_auc"),
            keras.metrics.AUC(curve="ROC", name="roc_auc"),
            keras.metrics.Recall(name="recall"),
            keras.metrics.Precision(name="precision"),
        ],
    )


class _ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose patience count continues from a previous call (Keras resets it on every fit)."""

    def __init__(self, initial_wait: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.initial_wait = initial_wait

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        self.wait = self.initial_wait


class _StateWriter(keras.callbacks.Callback):
    """After the checkpoints are written: record the epoch in ``state.json``, report progress, call the hook.

    Progress goes to the ``steelqc.training`` logger (the CLI shows it on the console): a training run is
    otherwise silent for minutes.
    """

    def __init__(
        self,
        state: _State,
        path: Path,
        stage: int,
        epochs: int,
        stopper: _ResumableEarlyStopping,
        hook: EpochHook | None,
    ) -> None:
        super().__init__()
        self.state, self.path, self.stage = state, path, stage
        self.epochs, self.stopper, self.hook = epochs, stopper, hook
        self.seconds: list[float] = []
        self.started = time.monotonic()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.started = time.monotonic()

    def _report(self, values: dict[str, float]) -> None:
        self.seconds.append(time.monotonic() - self.started)
        done = self.state.epochs_in_stage[str(self.stage)]
        per_epoch = sum(self.seconds) / len(self.seconds)
        LOG.info(
            "stage %d (%s) epoch %d/%d: loss %.4f, val PR-AUC %.4f (best %.4f), %.0f s/epoch, stage ETA %.0f s",
            self.stage, "frozen backbone" if self.stage == 1 else "fine-tuning", done, self.epochs,
            values.get("loss", float("nan")), values[MONITOR], self.state.best_val_pr_auc or float("nan"),
            per_epoch, per_epoch * max(self.epochs - done, 0),
        )  # fmt: skip

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        values = {key: float(value) for key, value in (logs or {}).items()}
        if MONITOR not in values:
            raise RuntimeError(f"training logs lack {MONITOR}: is the validation data empty?")
        state = self.state
        for key, value in values.items():
            state.history.setdefault(key, []).append(value)
        # a NaN epoch is never best: recorded as best, nothing after it could beat it (NaN compares false)
        improved = state.best_val_pr_auc is None or values[MONITOR] > state.best_val_pr_auc
        if np.isfinite(values[MONITOR]) and improved:
            state.best_val_pr_auc, state.best_epoch, state.best_stage = values[MONITOR], epoch, self.stage
        state.epochs_in_stage[str(self.stage)] += 1
        state.wait = self.stopper.wait
        state.save(self.path)
        self._report(values)
        if self.hook is not None:
            self.hook(epoch, values)


def _run_stage(
    model: keras.Model,
    stage: int,
    epochs: int,
    train_data: tf.data.Dataset,
    val_data: tf.data.Dataset,
    state: _State,
    folder: Path,
    patience: int,
    on_epoch_end: EpochHook | None,
) -> None:
    stopper = _ResumableEarlyStopping(
        initial_wait=state.wait, monitor=MONITOR, mode="max", patience=patience, baseline=state.best_val_pr_auc
    )
    callbacks = [
        keras.callbacks.ModelCheckpoint(
            str(folder / BEST_FILE),
            monitor=MONITOR,
            mode="max",
            save_best_only=True,
            initial_value_threshold=state.best_val_pr_auc,
        ),
        keras.callbacks.ModelCheckpoint(str(folder / LAST_FILE)),
        stopper,
        _StateWriter(state, folder / STATE_FILE, stage, epochs, stopper, on_epoch_end),
    ]
    start = state.epochs_done
    assert state.class_weights is not None  # fit_two_stage sets them before the first stage
    model.fit(
        train_data,
        validation_data=val_data,
        initial_epoch=start,
        epochs=start + epochs - state.epochs_in_stage[str(stage)],
        class_weight={int(k): v for k, v in state.class_weights.items()},
        callbacks=callbacks,
        # the input pipeline shuffles (a fresh image order per epoch); Keras cannot shuffle a tf.data dataset and
        # warns whenever its default shuffle=True is left on
        shuffle=False,
        verbose=0,
    )
    if stopper.stopped_epoch > 0:
        state.stopped_early.append(stage)
    state.wait = 0  # each stage gets its full patience, measured against the best so far
    state.save(folder / STATE_FILE)


def _load_state(folder: Path, architecture: dict[str, Any]) -> _State:
    path = folder / STATE_FILE
    if not path.exists():
        return _State(architecture=architecture)
    state = _State(**json.loads(path.read_text()))
    if state.architecture != architecture:
        raise ValueError(
            f"{folder} holds a checkpoint of a different model ({state.architecture}); "
            "use an empty checkpoint folder for a new configuration"
        )
    return state


def fit_two_stage(
    train_data: tf.data.Dataset,
    val_data: tf.data.Dataset,
    train_labels: np.ndarray | pd.Series,
    settings: Settings,
    checkpoint_dir: str | Path,
    *,
    on_epoch_end: EpochHook | None = None,
) -> TrainResult:
    """Train on ready ``(x, y)`` batches; :func:`train_model` feeds it from the patch index.

    Class weights are balanced from ``train_labels``, or all 1.0 when ``train.balanced_sampling`` already
    balances the batches (weighting as well would over-correct twice).
    """
    cfg, mcfg = settings.train, settings.model
    if cfg.epochs_frozen + cfg.epochs_finetune == 0:
        raise ValueError("train.epochs_frozen + train.epochs_finetune must be at least 1")
    folder = Path(checkpoint_dir)
    folder.mkdir(parents=True, exist_ok=True)
    architecture = {**mcfg.model_dump(), "patch_size": settings.patches.size}
    state = _load_state(folder, architecture)
    if state.class_weights is None:  # a new run; a resumed one keeps the weights it started with
        weights = {0: 1.0, 1: 1.0} if cfg.balanced_sampling else compute_class_weights(train_labels)
        state.class_weights = {str(k): v for k, v in weights.items()}
    keras.utils.set_random_seed(cfg.seed)

    pretrained = mcfg.weights.strip().lower() != "none"
    schedule = [(1, cfg.epochs_frozen, cfg.learning_rate), (2, cfg.epochs_finetune, cfg.finetune_learning_rate)]
    model: keras.Model | None = None
    for stage, epochs, learning_rate in schedule:
        done = state.epochs_in_stage[str(stage)]
        if done >= epochs or stage in state.stopped_early:
            continue
        if done > 0:  # interrupted inside this stage: the last checkpoint carries weights and optimizer
            model = keras.models.load_model(folder / LAST_FILE)
        else:
            if model is None:
                model = build_model(mcfg, settings.patches.size)
            if (folder / BEST_FILE).exists():  # fine-tune from the best epoch, not the last
                model.load_weights(folder / BEST_FILE)
            if stage == 1:
                set_backbone_trainable(model, 0 if pretrained else None)
            else:
                blocks = mcfg.fine_tune_blocks if mcfg.backbone != "small_cnn" else None
                set_backbone_trainable(model, blocks)
            _compile(model, learning_rate)
        _run_stage(model, stage, epochs, train_data, val_data, state, folder, cfg.patience, on_epoch_end)

    if not (folder / BEST_FILE).exists():
        raise RuntimeError(f"no checkpoint was written to {folder}: {MONITOR} never produced a finite value")
    assert state.class_weights is not None and state.best_val_pr_auc is not None  # set with the best checkpoint
    return TrainResult(
        model=keras.models.load_model(folder / BEST_FILE),
        history=state.history,
        class_weights={int(k): v for k, v in state.class_weights.items()},
        best_epoch=state.best_epoch,
        best_val_pr_auc=float(state.best_val_pr_auc),
        stage=state.best_stage,
    )


def train_model(
    dataset: Dataset,
    index: pd.DataFrame,
    settings: Settings,
    checkpoint_dir: str | Path,
    *,
    on_epoch_end: EpochHook | None = None,
) -> TrainResult:
    """Train on the index's ``train`` split, select on its ``val`` split; the ``test`` split is never read."""
    common: dict[str, Any] = {
        "batch_size": settings.train.batch_size,
        "train_settings": settings.train,
        "patch_settings": settings.patches,
        "workers": settings.data.image_workers,
    }
    train_data = patch_dataset(dataset, index, "train", training=True, **common)
    val_data = patch_dataset(dataset, index, "val", training=False, **common)
    labels = index.loc[index["split"] == "train", "label"]
    return fit_two_stage(train_data, val_data, labels, settings, checkpoint_dir, on_epoch_end=on_epoch_end)


def predict_split(
    model: keras.Model, dataset: Dataset, index: pd.DataFrame, split: str, settings: Settings
) -> np.ndarray:
    """Scores of every patch of ``split``, aligned with ``index[index.split == split]`` rows."""
    data = patch_dataset(
        dataset,
        index,
        split,
        batch_size=settings.train.batch_size,
        training=False,
        train_settings=settings.train,
        patch_settings=settings.patches,
        workers=settings.data.image_workers,
    )
    scores = model.predict(data, verbose=0).ravel()
    expected = int((index["split"] == split).sum())
    if scores.size != expected:
        raise RuntimeError(f"got {scores.size} scores for {expected} {split} patches")
    return scores.astype(np.float64)
