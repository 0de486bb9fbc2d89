"""Patch features, the embedding reducer and the date-partitioned patch log (local folder and S3 via moto)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import boto3
import cv2
import numpy as np
import pandas as pd
import pytest

from steelqc.monitoring import (
    FEATURE_COLUMNS,
    MonitoringDataError,
    PatchLog,
    fit_embedding_reducer,
    load_embedding_reducer,
    load_reference,
    patch_features,
    patch_frame,
    save_embedding_reducer,
    save_reference,
)


def _texture(seed: int = 0, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(120, 25, (size, size)), 0, 255).astype(np.uint8)


def test_features_respond_to_the_shift_they_describe() -> None:
    base = _texture()
    brighter = np.clip(base.astype(int) + 40, 0, 255).astype(np.uint8)
    blurred = cv2.GaussianBlur(base, (0, 0), 2.0)
    bordered = base.copy()
    bordered[:, :16] = 0
    flat = np.full_like(base, 120)
    f = patch_features(np.stack([base, brighter, blurred, bordered, flat]))
    assert list(f.columns) == list(FEATURE_COLUMNS)
    assert f.loc[1, "intensity_mean"] == pytest.approx(f.loc[0, "intensity_mean"] + 40, abs=1)
    assert f.loc[2, "blur"] < 0.2 * f.loc[0, "blur"]
    assert f.loc[2, "edge_density"] < f.loc[0, "edge_density"]
    assert f.loc[3, "black_border_fraction"] == pytest.approx(16 / 64)
    assert f.loc[0, "black_border_fraction"] == 0
    assert f.loc[4, ["intensity_std", "contrast", "blur", "edge_density"]].tolist() == [0, 0, 0, 0]


def test_features_reject_non_patch_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        patch_features(np.zeros((2, 8, 8), np.float32))
    assert patch_features(np.zeros((0, 8, 8), np.uint8)).empty


def test_reducer_round_trip_and_patch_frame(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(50, 64))
    reducer = fit_embedding_reducer(embeddings, n_components=8)
    loaded = load_embedding_reducer(save_embedding_reducer(reducer, tmp_path / "r.joblib"))
    np.testing.assert_allclose(loaded.transform(embeddings), reducer.transform(embeddings))

    patches = np.stack([_texture(i, 32) for i in range(50)])
    frame = patch_frame(patch_features(patches), rng.random(50), embeddings=embeddings, reducer=reducer,
                        images=["a.jpg"] * 50, positions=[(0, i) for i in range(50)])  # fmt: skip
    assert [f"emb_{i}" for i in range(8)] == [c for c in frame.columns if c.startswith("emb_")]
    assert {"image", "y", "x", "score", *FEATURE_COLUMNS} <= set(frame.columns)
    with pytest.raises(ValueError, match="2 scores"):
        patch_frame(patch_features(patches), np.zeros(2))

    save_reference(frame, reducer, tmp_path / "ref")
    reference, reducer_back = load_reference(tmp_path / "ref")
    pd.testing.assert_frame_equal(reference, frame)
    assert reducer_back is not None and reducer_back.n_components_ == 8


def test_reducer_needs_two_embeddings_and_a_reference_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 2"):
        fit_embedding_reducer(np.zeros((1, 4)))
    assert fit_embedding_reducer(np.random.default_rng(0).normal(size=(5, 3)), 8).n_components_ == 3
    with pytest.raises(MonitoringDataError, match="reference set missing"):
        load_reference(tmp_path)
    (tmp_path / "embedding_reducer.joblib").write_bytes(b"not a pickle")
    pd.DataFrame({"score": [0.1]}).to_parquet(tmp_path / "reference.parquet")
    with pytest.raises(Exception):  # noqa: B017 - joblib raises its own unpickling errors
        load_reference(tmp_path)


def _rows(n: int, value: float) -> pd.DataFrame:
    return pd.DataFrame({"score": np.full(n, value), "intensity_mean": np.arange(n, dtype=float)})


def _exercise_log(log: PatchLog) -> None:
    assert log.read().empty and log.partitions() == []
    assert log.append(pd.DataFrame()) is None
    log.append(_rows(3, 0.1), now=datetime(2026, 11, 25, 8, 0, tzinfo=UTC))
    log.append(_rows(2, 0.2), now=datetime(2026, 11, 26, 9, 0, tzinfo=UTC))
    written = log.append(_rows(4, 0.3), now=datetime(2026, 11, 26, 9, 0, tzinfo=UTC))
    assert written is not None and "date=2026-11-26/part-090000-" in written
    assert log.partitions() == [date(2026, 11, 25), date(2026, 11, 26)]
    everything = log.read()
    assert len(everything) == 9 and "logged_at" in everything.columns
    assert sorted(log.read(since=date(2026, 11, 26))["score"].unique()) == [0.2, 0.3]
    assert len(log.read(until=date(2026, 11, 25))) == 3
    assert log.read(since=date(2026, 11, 27)).empty


def test_patch_log_local(tmp_path: Path) -> None:
    log = PatchLog(tmp_path / "log")
    _exercise_log(log)
    assert sorted(p.name for p in (tmp_path / "log").iterdir()) == ["date=2026-11-25", "date=2026-11-26"]


def test_patch_log_names_an_unreadable_part(tmp_path: Path) -> None:
    log = PatchLog(tmp_path)
    log.append(_rows(1, 0.5), now=datetime(2026, 11, 25, tzinfo=UTC))
    bad = tmp_path / "date=2026-11-25" / "part-broken.parquet"
    bad.write_bytes(b"PAR1 truncated")
    with pytest.raises(MonitoringDataError, match="part-broken.parquet"):
        log.read()
    bad.unlink()
    (tmp_path / "date=2026-11-25" / "notes.txt").write_text("stray")
    with pytest.raises(MonitoringDataError, match="not a parquet file.*notes.txt"):
        log.read()
    (tmp_path / "date=2026-11-25" / "notes.txt").unlink()
    (tmp_path / "backup").mkdir()
    with pytest.raises(MonitoringDataError, match="not a date partition.*backup"):
        log.read()


def test_patch_log_on_s3_honours_the_endpoint(moto_s3_endpoint: str) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_s3_endpoint)
    s3.create_bucket(Bucket="plog")
    _exercise_log(PatchLog("s3://plog/prod/patches", endpoint_url=moto_s3_endpoint))
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="plog")["Contents"]]
    assert all(k.startswith("prod/patches/date=2026-11-2") and k.endswith(".parquet") for k in keys)
    assert len(keys) == 3
    with pytest.raises(MonitoringDataError, match="bucket 'missing' does not exist"):
        PatchLog("s3://missing/log", endpoint_url=moto_s3_endpoint).read()


def test_one_image_is_unlike_the_reference_only_in_the_features_that_moved() -> None:
    from steelqc.config import MonitoringSettings
    from steelqc.monitoring import image_drift

    reference = patch_features(np.stack([_texture(seed) for seed in range(200)]))
    same = np.stack([_texture(seed) for seed in range(1000, 1012)])
    check = image_drift(same, reference, MonitoringSettings())
    assert not check.unlike_training and check.n_patches == 12 and check.n_reference == 200
    brighter = np.clip(same.astype(int) + 60, 0, 255).astype(np.uint8)
    check = image_drift(brighter, reference, MonitoringSettings())
    assert [u.feature for u in check.unusual] == ["intensity_mean"]
    unusual = check.unusual[0]
    assert unusual.share_outside == 1.0 and unusual.image_median == pytest.approx(180, abs=2)
    assert check.message().startswith("unlike the training data: intensity_mean 180 (training ")
    half = np.concatenate([same[:6], brighter[:6]])  # half the patches moved: the default share (0.5) flags it
    assert image_drift(half, reference, MonitoringSettings()).unlike_training
    assert not image_drift(half, reference, MonitoringSettings(image_unusual_share=0.6)).unlike_training
    with pytest.raises(ValueError, match="reference set lacks"):
        image_drift(same, reference.drop(columns=["blur"]), MonitoringSettings())
