"""Batch inspection with a tiny untrained small CNN: real sample images, bad files, S3, and the patch log."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import cv2
import keras
import numpy as np
import pandas as pd
import pytest

from steelqc.batch_inspection import DECISION_COLUMNS, PROVENANCE_COLUMNS, DecidedBy, inspect_batch, list_images
from steelqc.config import ModelSettings, MonitoringSettings
from steelqc.data.errors import DatasetError
from steelqc.data.images import encode_jpeg, encode_png, read_image
from steelqc.data.synth import generate_strip
from steelqc.inference import Inspector
from steelqc.model import build_model
from steelqc.monitoring import PatchLog, build_reference, drift_report, embedding_columns
from steelqc.patches import extract_patches
from steelqc.thresholds import Thresholds

from hostile_files import deflate_bomb_png, jpeg_with_corrupt_entropy, png_header_claiming

SIZE = (256, 1600)


@pytest.fixture(scope="module")
def model() -> keras.Model:
    keras.utils.set_random_seed(3)
    return build_model(ModelSettings(backbone="small_cnn", weights="none", input_size=32), 256)


def _thresholds(t_pass: float, t_fail: float) -> Thresholds:
    return Thresholds(t_pass, t_fail, 1.0, 1.0, 1.0, 0.5, 10, 10, True, "set by the test")


def _inspector(model: keras.Model, t_pass: float = 0.5, t_fail: float = 0.9) -> Inspector:
    return Inspector(model, _thresholds(t_pass, t_fail), 256, 128, "reflect")


def test_real_sample_images_all_decode_and_decisions_are_written(
    model: keras.Model, severstal_sample: Path, tmp_path: Path
) -> None:
    images = severstal_sample / "train_images"
    worst = sorted(r.worst_score for r in _inspector(model).inspect([read_image(p) for p in sorted(images.iterdir())]))
    # thresholds between the images' worst scores, so all three decisions occur
    inspector = _inspector(model, t_pass=(worst[2] + worst[3]) / 2, t_fail=(worst[6] + worst[7]) / 2)

    decided_by = DecidedBy("models:/steelqc/7", "7", "keras", card={"recall": "0.990000", "data_hash": "abc123"})
    result = inspect_batch(
        inspector, images, tmp_path, workers=2, batch_images=3, image_size=SIZE, decided_by=decided_by
    )

    decisions = pd.read_csv(result.csv_path, dtype={"model_version": str})
    assert list(decisions.columns) == [*DECISION_COLUMNS, *PROVENANCE_COLUMNS]
    provenance = decisions[list(PROVENANCE_COLUMNS)].drop_duplicates()
    assert len(provenance) == 1  # one model, one moment for the whole batch
    assert provenance.iloc[0][["model_uri", "model_version", "runtime", "mode"]].tolist() == [
        "models:/steelqc/7", "7", "keras", "patches"]  # fmt: skip
    assert provenance.iloc[0]["t_pass"] == pytest.approx(inspector.thresholds.t_pass)
    assert provenance.iloc[0]["t_fail"] == pytest.approx(inspector.thresholds.t_fail)
    assert pd.Timestamp(provenance.iloc[0]["decided_at"]).tzinfo is not None
    page = result.report_path.read_text() if result.report_path else ""
    assert "Batch inspection: 10 images" in page and "models:/steelqc/7" in page and "abc123" in page
    shown = {line.split('src="', 1)[1].split('"', 1)[0] for line in page.split("<img")[1:]}
    assert shown and all((tmp_path / src).is_file() and src.startswith("overlays/") for src in shown)
    assert sorted(decisions["image"]) == sorted(p.name for p in images.iterdir())
    assert result.counts == {"PASS": 3, "HOLD": 4, "FAIL": 3, "ERROR": 0}
    assert decisions["error"].isna().all()
    records = json.loads(result.json_path.read_text())
    assert len(records) == 10 and all(len(r["patch_scores"]) == 12 for r in records)
    assert all(r["model_version"] == "7" and r["model_uri"] == "models:/steelqc/7" for r in records)
    for record in records:
        best = max(record["patch_scores"], key=lambda p: p["score"])
        assert (best["y"], best["x"]) == (record["worst_patch_y"], record["worst_patch_x"])
        assert best["score"] == pytest.approx(record["worst_score"], abs=1e-6)
    flagged = {r["image"] for r in records if r["decision"] in ("HOLD", "FAIL")}
    assert {p.name.removesuffix(".overlay.png") for p in result.overlays} == flagged
    overlay = cv2.imread(str(result.overlays[0]))
    assert overlay.shape == (*SIZE, 3)
    assert result.images_per_second > 0


def test_bad_files_are_listed_and_never_stop_the_batch(model: keras.Model, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        (folder / f"good{i}.jpg").write_bytes(encode_jpeg(generate_strip(rng)[0]))
    good = (folder / "good0.jpg").read_bytes()
    (folder / "corrupt.jpg").write_bytes(good[: len(good) // 2])
    (folder / "notes.txt").write_text("not an image")
    (folder / "empty.png").write_bytes(b"")
    (folder / "small.png").write_bytes(encode_png(np.zeros((128, 800), np.uint8)))

    result = inspect_batch(_inspector(model), folder, tmp_path / "out", workers=2, batch_images=2, image_size=SIZE)

    rows = result.decisions.set_index("image")
    assert len(rows) == 7 and result.counts["ERROR"] == 4
    assert rows.loc["corrupt.jpg", "error"] == "truncated JPEG data (end marker missing)"
    assert "not a JPEG/PNG/BMP/TIFF image" in rows.loc["notes.txt", "error"]
    assert rows.loc["empty.png", "error"] == "empty file"
    assert rows.loc["small.png", "error"] == "image is 128x800, expected 256x1600"
    assert (rows.loc[[f"good{i}.jpg" for i in range(3)], "decision"] != "ERROR").all()
    errors = pd.read_csv(result.csv_path).set_index("image")
    assert errors.loc["corrupt.jpg", "decision"] == "ERROR" and np.isnan(errors.loc["corrupt.jpg", "worst_score"])
    records = {r["image"]: r for r in json.loads(result.json_path.read_text())}
    assert records["small.png"]["worst_patch_y"] is None and records["small.png"]["patch_scores"] == []

    without_size_check = inspect_batch(_inspector(model), folder / "small.png", tmp_path / "one")
    assert without_size_check.counts["ERROR"] == 0 and len(without_size_check.decisions) == 1


def test_hostile_files_are_error_rows_while_the_rest_of_the_batch_is_decided(
    model: keras.Model, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(2):
        (folder / f"good{i}.jpg").write_bytes(encode_jpeg(generate_strip(rng)[0]))
    (folder / "claims.png").write_bytes(png_header_claiming(60000, 60000))
    (folder / "bomb.png").write_bytes(deflate_bomb_png(30000, 30000))
    (folder / "corrupt.jpg").write_bytes(jpeg_with_corrupt_entropy(generate_strip(rng)[0], seed=1))
    (tmp_path / "outside.png").write_bytes(encode_png(generate_strip(rng)[0]))
    (folder / "link.png").symlink_to(tmp_path / "outside.png")

    for image_size in (SIZE, None):  # `--image-size any` decoded the bomb in full (9.9 GB)
        result = inspect_batch(
            _inspector(model), folder, tmp_path / "out", workers=2, batch_images=2, image_size=image_size
        )
        rows = result.decisions.set_index("image")
        assert result.counts["ERROR"] == 4 and (rows.loc[["good0.jpg", "good1.jpg"], "decision"] != "ERROR").all()
        assert (
            "60000x60000" in rows.loc["claims.png", "error"]
            and "over the pixel budget" in rows.loc["claims.png", "error"]
        )
        assert "30000x30000" in rows.loc["bomb.png", "error"]
        assert "Corrupt JPEG data" in rows.loc["corrupt.jpg", "error"]
        assert "outside the root" in rows.loc["link.png", "error"]

    named = inspect_batch(_inspector(model), folder / "link.png", tmp_path / "one", image_size=SIZE)
    assert named.counts["ERROR"] == 0  # a file named on its own is read wherever its symlink points


def test_an_unreadable_file_is_an_error_row(
    model: keras.Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from steelqc.data.storage import LocalStorage

    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name in ("a.png", "locked.png"):
        (folder / name).write_bytes(encode_png(generate_strip(rng)[0]))
    read_bytes = LocalStorage.read_bytes

    def deny_locked(self: LocalStorage, relpath: str) -> bytes:
        if relpath == "locked.png":
            raise PermissionError(13, "Permission denied")
        return read_bytes(self, relpath)

    monkeypatch.setattr(LocalStorage, "read_bytes", deny_locked)
    result = inspect_batch(_inspector(model), folder, tmp_path / "out", workers=2, image_size=SIZE)
    rows = result.decisions.set_index("image")
    assert rows.loc["locked.png", "decision"] == "ERROR" and "Permission denied" in rows.loc["locked.png", "error"]
    assert rows.loc["a.png", "decision"] != "ERROR"


def test_sources_that_hold_nothing_are_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file or folder"):
        list_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no files to inspect"):
        list_images(tmp_path / "empty")


def test_s3_prefix_and_object(
    model: keras.Model, severstal_sample: Path, moto_s3_endpoint: str, tmp_path: Path
) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_s3_endpoint)
    s3.create_bucket(Bucket="coils")
    for path in sorted((severstal_sample / "train_images").iterdir())[:3]:
        s3.put_object(Bucket="coils", Key=f"line1/{path.name}", Body=path.read_bytes())
    result = inspect_batch(_inspector(model), "s3://coils/line1", tmp_path / "a", endpoint_url=moto_s3_endpoint)
    assert len(result.decisions) == 3 and result.counts["ERROR"] == 0
    one = sorted((severstal_sample / "train_images").iterdir())[0].name
    single = inspect_batch(_inspector(model), f"s3://coils/line1/{one}", tmp_path / "b", endpoint_url=moto_s3_endpoint)
    assert single.decisions["image"].tolist() == [one]


def test_patch_log_feeds_drift_monitoring(model: keras.Model, tmp_path: Path) -> None:
    """Reference from 'validation' strips; production strips are blurred: the log's report flags drift."""
    rng = np.random.default_rng(5)
    validation = np.concatenate([extract_patches(generate_strip(rng)[0], 256, 128, "reflect")[0] for _ in range(12)])
    reference, reducer = build_reference(model, validation, n_components=4)
    assert embedding_columns(reference) == ["emb_0", "emb_1", "emb_2", "emb_3"]

    folder = tmp_path / "prod"
    folder.mkdir()
    for i in range(6):
        (folder / f"s{i}.png").write_bytes(encode_png(generate_strip(rng, blur_sigma=2.0)[0]))
    log = PatchLog(tmp_path / "log")
    result = inspect_batch(_inspector(model), folder, tmp_path / "out", batch_images=4, patch_log=log, reducer=reducer)

    logged = log.read()
    assert len(result.patch_log_files) == 1 and len(logged) == 6 * 12
    assert set(logged["image"]) == {f"s{i}.png" for i in range(6)}
    first = json.loads(result.decisions.set_index("image").loc["s0.png", "patch_scores"])
    s0 = logged[logged["image"] == "s0.png"].sort_values(["y", "x"])
    np.testing.assert_allclose(s0["score"], [p["score"] for p in first], atol=1e-6)
    assert embedding_columns(logged) == embedding_columns(reference)

    drift = drift_report(reference, logged, tmp_path / "report", MonitoringSettings())
    assert drift.drift_detected and "blur" in drift.drifted_columns
    assert drift.embedding_drift_score is not None and drift.notes == []


def test_same_images_without_a_log_give_the_same_decisions(model: keras.Model, tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        (folder / f"s{i}.png").write_bytes(encode_png(generate_strip(rng)[0]))
    _, reducer = build_reference(model, extract_patches(generate_strip(rng)[0], 256, 128, "reflect")[0])
    plain = inspect_batch(_inspector(model), folder, tmp_path / "a")
    logged = inspect_batch(
        _inspector(model), folder, tmp_path / "b", patch_log=PatchLog(tmp_path / "l"), reducer=reducer
    )
    pd.testing.assert_frame_equal(
        plain.decisions.drop(columns="patch_scores"), logged.decisions.drop(columns="patch_scores"), atol=1e-6
    )
    assert len(PatchLog(tmp_path / "l").read()) == 3 * 12


def test_strip_mode_logs_the_heads_embeddings_and_reports_progress(model: keras.Model, tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(5):
        (folder / f"s{i}.png").write_bytes(encode_png(generate_strip(rng)[0]))
    _, reducer = build_reference(model, extract_patches(generate_strip(rng)[0], 256, 128, "reflect")[0], n_components=4)
    strip = Inspector(model, _thresholds(0.5, 0.9), 256, 128, "reflect", mode="strip")
    calls: list[tuple[int, int]] = []
    log = PatchLog(tmp_path / "log")
    inspect_batch(strip, folder, tmp_path / "out", batch_images=2, patch_log=log, reducer=reducer,
                  progress=lambda done, total: calls.append((done, total)))  # fmt: skip
    assert calls == [(2, 5), (2, 5), (1, 5)]

    logged = log.read()
    assert len(logged) == 5 * 12 and embedding_columns(logged) == ["emb_0", "emb_1", "emb_2", "emb_3"]
    (s0,) = strip.inspect([read_image(folder / "s0.png")])
    assert s0.embeddings is not None
    rows = logged[logged["image"] == "s0.png"].sort_values(["y", "x"])
    np.testing.assert_allclose(rows["score"], s0.patch_scores, atol=1e-6)
    np.testing.assert_allclose(rows[embedding_columns(logged)], reducer.transform(s0.embeddings), atol=1e-4)


def _strip_folder(folder: Path, count: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir()
    for i in range(count):
        classes = (1 + i % 4,) if i % 2 else ()
        (folder / f"s{i:02d}.png").write_bytes(encode_png(generate_strip(rng, defective_classes=classes)[0]))
    return folder


def test_rows_stream_to_disk_and_the_patch_log_is_staged_in_bounded_parts(
    model: keras.Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decisions are written group by group; patch-log rows beyond the in-memory limit go to staged files, and
    every row reaches the log exactly once; the JSON file holds the same rows as the CSV."""
    from steelqc import batch_inspection

    monkeypatch.setattr(batch_inspection, "PATCH_LOG_ROWS_PER_FILE", 30)  # groups of 2 strips = 24 rows
    folder = _strip_folder(tmp_path / "in", 7, seed=11)
    _, reducer = build_reference(model, extract_patches(read_image(folder / "s00.png"), 256, 128, "reflect")[0])
    log = PatchLog(tmp_path / "log")
    result = inspect_batch(_inspector(model), folder, tmp_path / "out", batch_images=2, patch_log=log, reducer=reducer)

    assert len(result.patch_log_files) == 2  # staged at 30 rows or more: strips 1-4 (48 rows), then 5-7 (36)
    logged = log.read()
    assert len(logged) == 7 * 12 and not logged.duplicated(["image", "y", "x"]).any()
    decisions = result.decisions
    assert decisions["image"].tolist() == [f"s{i:02d}.png" for i in range(7)] and result.images == 7
    records = json.loads(result.json_path.read_text())
    assert [r["image"] for r in records] == decisions["image"].tolist()
    assert [r["decision"] for r in records] == decisions["decision"].tolist()
    assert records[0]["error"] == "" and isinstance(records[0]["patch_scores"], list)
    assert not list((tmp_path / "out").glob("*.partial"))


def test_a_batch_that_fails_midway_keeps_the_previous_outputs_and_logs_nothing(
    model: keras.Model, tmp_path: Path
) -> None:
    folder = _strip_folder(tmp_path / "in", 6, seed=12)
    out, log = tmp_path / "out", PatchLog(tmp_path / "log")
    inspect_batch(_inspector(model), folder, out, batch_images=2)
    before = (out / "decisions.csv").read_bytes(), (out / "decisions.json").read_bytes()

    class FailsOnThirdGroup(Inspector):
        calls = 0

        def inspect(self, images):  # type: ignore[no-untyped-def]
            FailsOnThirdGroup.calls += 1
            if FailsOnThirdGroup.calls == 3:
                raise RuntimeError("runtime crashed")
            return super().inspect(images)

    failing = FailsOnThirdGroup(model, _thresholds(0.5, 0.9), 256, 128, "reflect")
    with pytest.raises(RuntimeError, match="runtime crashed"):
        inspect_batch(failing, folder, out, batch_images=2, patch_log=log)
    assert ((out / "decisions.csv").read_bytes(), (out / "decisions.json").read_bytes()) == before
    assert not list(out.glob("*.partial")) and log.partitions() == []


def test_a_batch_of_many_bad_files_keeps_the_first_errors_and_counts_them_all(
    model: keras.Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from steelqc import batch_inspection

    monkeypatch.setattr(batch_inspection, "MAX_ERRORS_KEPT", 2)
    folder = _strip_folder(tmp_path / "in", 1, seed=13)
    for i in range(5):
        (folder / f"bad{i}.jpg").write_bytes(b"not an image")
    result = inspect_batch(_inspector(model), folder, tmp_path / "out", batch_images=2)

    assert result.counts["ERROR"] == 5 and [image for image, _ in result.errors] == ["bad0.jpg", "bad1.jpg"]
    assert (result.decisions["decision"] == "ERROR").sum() == 5
    report = result.report_path.read_text() if result.report_path else ""
    assert "bad1.jpg" in report and "bad2.jpg" not in report and "and 3 more in decisions.csv" in report
