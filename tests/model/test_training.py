"""Training behaviour: capacity, class weights, selection on val PR-AUC, resuming, the real input pipeline."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from sklearn.metrics import average_precision_score

from steelqc.data.dataset import Dataset
from steelqc.model import build_model, preprocess_patches
from steelqc.training import compute_class_weights, fit_two_stage, predict_split, train_model

from tiny_model_data import blob_patches, tiny_settings


def batches(x: np.ndarray, y: np.ndarray, *, shuffle: bool = False) -> tf.data.Dataset:
    data = tf.data.Dataset.from_tensor_slices((preprocess_patches(x), y))
    return (data.shuffle(len(y), seed=0) if shuffle else data).batch(16)


def test_overfits_one_batch() -> None:
    keras.utils.set_random_seed(0)
    settings = tiny_settings(model__dropout=0.0)
    x, _ = blob_patches(16, 32, seed=0)
    y = np.random.default_rng(0).permutation(np.arange(16) % 2).astype(np.float32)  # labels unrelated to pixels
    model = build_model(settings.model, 32)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy", metrics=["accuracy"])
    steps = 150  # one epoch of the same 16-sample batch repeated: no per-epoch overhead
    model.fit(preprocess_patches(np.tile(x, (steps, 1, 1))), np.tile(y, steps), batch_size=16, shuffle=False, verbose=0)
    loss, accuracy = model.evaluate(preprocess_patches(x), y, verbose=0)
    assert accuracy == 1.0 and loss < 0.1


def test_class_weights_are_balanced_from_training_labels() -> None:
    assert compute_class_weights(np.array([0, 0, 0, 1])) == {0: pytest.approx(4 / 6), 1: pytest.approx(2.0)}
    with pytest.raises(ValueError, match="both classes"):
        compute_class_weights(np.zeros(5))


def test_flag_everything_epochs_are_never_selected(tmp_path: Path) -> None:
    """Stage two is trained on all-positive labels at a high rate: it ends up flagging every validation patch.

    Its validation recall is 1.0, but selection on val PR-AUC keeps the discriminating stage-one checkpoint.
    """
    x_train, y_train = blob_patches(64, 32, seed=0)
    x_val, y_val = blob_patches(32, 32, seed=1)
    val = batches(x_val, y_val)
    base = {"train__learning_rate": 3e-3, "train__finetune_learning_rate": 1e-2, "train__patience": 5}
    fit_two_stage(batches(x_train, y_train, shuffle=True), val, y_train,
                  tiny_settings(**base, train__epochs_frozen=3, train__epochs_finetune=0), tmp_path)
    result = fit_two_stage(batches(x_train, np.ones_like(y_train)), val, y_train,
                           tiny_settings(**base, train__epochs_frozen=3, train__epochs_finetune=2), tmp_path)

    history = result.history
    degenerate = [e for e in (3, 4) if history["val_recall"][e] == 1.0 and history["val_precision"][e] == 0.5]
    assert degenerate, f"precondition: stage two should flag everything, got {history}"
    assert all(history["val_pr_auc"][e] < result.best_val_pr_auc for e in degenerate)
    assert result.stage == 1 and result.best_epoch < 3
    scores = result.model.predict(preprocess_patches(x_val), verbose=0).ravel()
    assert average_precision_score(y_val, scores) > 0.95


def test_interrupted_training_resumes_from_the_last_checkpoint(tmp_path: Path) -> None:
    x_train, y_train = blob_patches(48, 32, seed=0)
    x_val, y_val = blob_patches(16, 32, seed=1)
    train, val = batches(x_train, y_train, shuffle=True), batches(x_val, y_val)
    settings = tiny_settings(train__epochs_frozen=2, train__epochs_finetune=2, train__patience=10)
    seen: list[int] = []

    class Interrupted(Exception):
        pass

    def stop_after_epoch_one(epoch: int, logs: dict[str, float]) -> None:
        seen.append(epoch)
        assert "val_pr_auc" in logs and "loss" in logs
        if epoch == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        fit_two_stage(train, val, y_train, settings, tmp_path, on_epoch_end=stop_after_epoch_one)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["epochs_in_stage"] == {"1": 2, "2": 0}
    assert (tmp_path / "last.keras").exists() and (tmp_path / "best.keras").exists()

    result = fit_two_stage(train, val, y_train, settings, tmp_path, on_epoch_end=lambda e, logs: seen.append(e))
    assert seen == [0, 1, 2, 3]  # stage two picked up at epoch 2, stage one was not repeated
    assert len(result.history["val_pr_auc"]) == 4
    assert result.best_val_pr_auc == max(result.history["val_pr_auc"])
    assert result.class_weights == {0: 1.0, 1: 1.0}

    seen.clear()
    again = fit_two_stage(train, val, y_train, settings, tmp_path, on_epoch_end=lambda e, logs: seen.append(e))
    assert seen == [] and again.best_epoch == result.best_epoch  # finished: nothing left to train

    with pytest.raises(ValueError, match="different model"):
        fit_two_stage(train, val, y_train, tiny_settings(model__dropout=0.5), tmp_path)


def test_train_model_and_predict_split_use_the_patch_index(
    generated: tuple[Dataset, pd.DataFrame], tmp_path: Path
) -> None:
    dataset, index = generated
    settings = tiny_settings(train__epochs_frozen=2, train__epochs_finetune=0, train__learning_rate=3e-3)
    epochs: list[int] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train_model(dataset, index, settings, tmp_path / "ckpt", on_epoch_end=lambda e, logs: epochs.append(e))
    assert epochs == [0, 1]
    assert not [w for w in caught if "shuffle" in str(w.message)]  # the input pipeline shuffles, not Keras
    train_labels = index.loc[index.split == "train", "label"]
    assert result.class_weights == compute_class_weights(train_labels)
    for split in ("val", "test"):
        scores = predict_split(result.model, dataset, index, split, settings)
        assert scores.shape == ((index.split == split).sum(),)
        assert np.all((scores >= 0) & (scores <= 1))


def test_a_nan_epoch_is_never_recorded_as_best(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from steelqc.training import STATE_FILE, _State, _StateWriter

    state = _State(architecture={})
    writer = _StateWriter(state, tmp_path / STATE_FILE, 1, 5, SimpleNamespace(wait=0), None)
    for epoch, value in enumerate([float("nan"), 0.4, 0.7, float("nan"), 0.6]):
        writer.on_epoch_end(epoch, {"val_pr_auc": value})
    assert (state.best_epoch, state.best_val_pr_auc) == (2, 0.7)
    assert json.loads((tmp_path / STATE_FILE).read_text())["best_epoch"] == 2


def test_every_epoch_reports_stage_progress(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from types import SimpleNamespace

    from steelqc.training import STATE_FILE, _State, _StateWriter

    writer = _StateWriter(_State(architecture={}), tmp_path / STATE_FILE, 2, 3, SimpleNamespace(wait=0), None)
    with caplog.at_level("INFO", logger="steelqc.training"):
        for epoch in range(2):
            writer.on_epoch_begin(epoch)
            writer.on_epoch_end(epoch, {"loss": 0.5, "val_pr_auc": 0.8})
    lines = [r.getMessage() for r in caplog.records if r.name == "steelqc.training"]
    assert len(lines) == 2 and lines[1].startswith("stage 2 (fine-tuning) epoch 2/3: loss 0.5000, val PR-AUC 0.8000")
    assert "s/epoch, stage ETA" in lines[1]
