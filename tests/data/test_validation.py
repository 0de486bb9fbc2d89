"""The validation gate on real files: generated data, one corruption per bad-input kind, the real sample."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from steelqc.cli import app
from steelqc.config import ValidationSettings
from steelqc.data.dataset import IMAGES_DIR, LABELS_FILE, Dataset
from steelqc.data.images import encode_jpeg, encode_png
from steelqc.data.synth import generate_dataset, generate_strip
from steelqc.validation import (
    EXAMPLES_PER_FAILURE,
    ValidationFailed,
    ValidationResult,
    compute_data_hash,
    load_manifest,
    scan_image_files,
    scan_images,
    validate_dataset,
)

from hostile_files import deflate_bomb_png, jpeg_with_corrupt_entropy, png_header_claiming


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _append_rows(root: Path, rows: list[tuple[str, str, str]]) -> list[int]:
    """Append label rows to train.csv; return their CSV line numbers (header = line 1)."""
    labels = pd.read_csv(root / LABELS_FILE, dtype=str, keep_default_na=False)
    first = len(labels) + 2
    extra = pd.DataFrame(rows, columns=labels.columns)
    pd.concat([labels, extra]).to_csv(root / LABELS_FILE, index=False)
    return list(range(first, first + len(rows)))


def _clean_ids(root: Path) -> list[str]:
    dataset = Dataset.open(str(root))
    return sorted(set(dataset.image_ids) - set(dataset.labels["ImageId"]))


def _validate(root: Path, report: Path, mode: str = "fail", **overrides: object) -> ValidationResult:
    settings = ValidationSettings(**overrides)  # type: ignore[arg-type]
    return validate_dataset(Dataset.open(str(root)), settings, report, mode=mode)  # type: ignore[arg-type]


def _failure(result: ValidationResult, suite: str, column: str) -> dict:
    matches = [f for f in result.failed_expectations if f["suite"] == suite and f["column"] == column]
    assert matches, f"no failed expectation on {suite}.{column}: {result.failed_expectations}"
    return matches[0]


# --------------------------------------------------------------------------------------------------
# One dataset holding every kind of bad input, each on its own image, validated once in quarantine mode.

LABEL_KINDS = {  # kind: (EncodedPixels or None for a valid mask, ClassId, failing column)
    "odd RLE count": ("1 3 5", "1", "rle_pairs"),
    "non-integer RLE": ("1 a", "1", "rle_pairs"),
    "empty RLE": ("", "1", "rle_pairs"),
    "RLE start 0": ("0 5", "1", "rle_first_start"),
    "RLE zero length": ("5 0", "1", "rle_min_length"),
    "RLE past the image": ("409599 5", "1", "rle_last_pixel"),
    "RLE unsorted": ("500 5 100 5", "1", "rle_min_step"),
    "RLE overlapping": ("100 10 105 10", "1", "rle_min_gap"),
    "ClassId out of range": ("100 10", "5", "ClassId"),
}
IMAGE_KINDS = {  # file name: (what is wrong, failing column, expectation)
    "aaaaaaaa1.jpg": ("truncated JPEG", "decode_error", "expect_column_values_to_be_null"),
    "aaaaaaaa2.jpg": ("not an image", "decode_error", "expect_column_values_to_be_null"),
    "aaaaaaaa3.jpg": ("wrong size", "height", "expect_column_values_to_be_between"),
    "aaaaaaaa4.jpg": ("blank", "pixel_range", "expect_column_values_to_be_between"),
    "aaaaaaaa5.jpg": ("4 channels", "channels", "expect_column_values_to_be_in_set"),
    "aaaaaaaa6.jpg": ("PNG header claiming 60000x60000", "decode_error", "expect_column_values_to_be_null"),
    "aaaaaaaa7.jpg": ("decompression bomb", "decode_error", "expect_column_values_to_be_null"),
    "aaaaaaaa8.jpg": ("corrupt JPEG entropy data", "decode_error", "expect_column_values_to_be_null"),
    "aaaaaaaa9.jpg": ("symlink out of the dataset", "decode_error", "expect_column_values_to_be_null"),
}


def _outside_file(folder: Path) -> Path:
    """A readable file outside the dataset (as /etc/passwd was): a symlink to it must never be read."""
    (folder / "secret.txt").write_text("root:x:0:0\n")
    return folder / "secret.txt"


@pytest.fixture(scope="module")
def corrupted(synthetic_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = _copy(synthetic_dataset, tmp_path_factory.mktemp("corrupted") / "data")
    clean = _clean_ids(root)
    assert len(clean) > len(LABEL_KINDS) + 1, "each bad label kind needs its own clean image"
    labels = pd.read_csv(root / LABELS_FILE, dtype=str)
    only_class3 = (labels["ClassId"] == "3") & ~labels["ImageId"].duplicated(keep=False)
    class3_row = labels[only_class3].iloc[0]  # dropping its image leaves every class present
    rows = [(clean[i], class_id, encoded) for i, (encoded, class_id, _) in enumerate(LABEL_KINDS.values())]
    rows += [
        (class3_row["ImageId"], "3", class3_row["EncodedPixels"]),  # a duplicate (ImageId, ClassId)
        ("../a1b2c3d4e.jpg", "1", "1 5"),  # escapes the images folder
        ("ABCDEF123.jpg", "1", "1 5"),  # breaks the ImageId pattern
        ("bbbbbbbb1.jpg", "2", "1 5"),  # no such file
    ]
    lines = _append_rows(root, rows)
    good = (root / IMAGES_DIR / clean[-1]).read_bytes()
    images = root / IMAGES_DIR
    (images / "aaaaaaaa1.jpg").write_bytes(good[: len(good) // 2])
    (images / "aaaaaaaa2.jpg").write_bytes(b"ImageId,ClassId\n")
    small = np.full((128, 800), 90, np.uint8) + np.eye(128, 800, dtype=np.uint8)
    (images / "aaaaaaaa3.jpg").write_bytes(encode_jpeg(small))
    (images / "aaaaaaaa4.jpg").write_bytes(encode_jpeg(np.zeros((256, 1600), np.uint8)))
    (images / "aaaaaaaa5.jpg").write_bytes(encode_png(np.dstack([np.eye(256, 1600, dtype=np.uint8) * 200] * 4)))
    (images / "aaaaaaaa6.jpg").write_bytes(png_header_claiming(60000, 60000))
    (images / "aaaaaaaa7.jpg").write_bytes(deflate_bomb_png(30000, 30000))
    (images / "aaaaaaaa8.jpg").write_bytes(
        jpeg_with_corrupt_entropy(generate_strip(np.random.default_rng(1))[0], seed=1)
    )
    (images / "aaaaaaaa9.jpg").symlink_to(_outside_file(tmp_path_factory.mktemp("outside")))
    (images / "cccccccc1.jpg").write_bytes(good)  # an exact duplicate of clean[-1]: a warning only
    result = _validate(root, tmp_path_factory.mktemp("report"), mode="quarantine", min_valid_fraction=0.3)
    return {
        "root": root,
        "result": result,
        "lines": dict(zip([*LABEL_KINDS, "duplicate", "unsafe", "pattern", "missing"], lines, strict=True)),
        "duplicate_of": int(class3_row.name) + 2,  # the CSV line of the row that was copied
        "clean": clean,
    }


def _rejected_for(result: ValidationResult, *, row: int | None = None, file: str | None = None) -> pd.DataFrame:
    rejected = result.rejected
    if row is not None:
        return rejected[(rejected["file"] == LABELS_FILE) & (rejected["row"] == row)]
    return rejected[rejected["file"] == f"{IMAGES_DIR}/{file}"]


@pytest.mark.parametrize("kind", list(LABEL_KINDS))
def test_each_bad_label_kind_fails_its_expectation_and_names_the_row(corrupted: dict, kind: str) -> None:
    result, line = corrupted["result"], corrupted["lines"][kind]
    column = LABEL_KINDS[kind][2]
    failure = _failure(result, "labels", column)
    assert line in [example["row"] for example in failure["examples"]]
    reasons = _rejected_for(result, row=line)
    assert reasons["expectation"].str.contains(f"({column})", regex=False).any(), reasons
    image_id = corrupted["clean"][list(LABEL_KINDS).index(kind)]
    assert image_id not in result.kept_image_ids  # dropped whole with its bad row


def test_duplicate_rows_name_both_rows(corrupted: dict) -> None:
    failure = _failure(corrupted["result"], "labels", "ImageId,ClassId")
    named = {example["row"] for example in failure["examples"]}
    assert named == {corrupted["duplicate_of"], corrupted["lines"]["duplicate"]}
    assert failure["expectation"] == "expect_compound_columns_to_be_unique"


def test_unsafe_image_id_is_rejected_and_never_read(corrupted: dict) -> None:
    result, line = corrupted["result"], corrupted["lines"]["unsafe"]
    failure = _failure(result, "labels", "ImageId")
    assert failure["expectation"] == "expect_column_values_to_not_match_regex"
    assert {"row": line, "ImageId": "../a1b2c3d4e.jpg"} in failure["examples"]
    assert set(_rejected_for(result, row=line)["expectation"]) >= {
        "expect_column_values_to_not_match_regex(ImageId)",
        "expect_column_values_to_match_regex(ImageId)",
    }


def test_image_id_pattern_is_enforced(corrupted: dict) -> None:
    reasons = _rejected_for(corrupted["result"], row=corrupted["lines"]["pattern"])
    assert "expect_column_values_to_match_regex(ImageId)" in set(reasons["expectation"])


def test_missing_file_is_named(corrupted: dict) -> None:
    result = corrupted["result"]
    failure = _failure(result, "images", "exists")
    assert {"exists": False, "file": "bbbbbbbb1.jpg"} in failure["examples"]
    reasons = _rejected_for(result, file="bbbbbbbb1.jpg")
    assert "expect_column_values_to_be_in_set(exists)" in set(reasons["expectation"])
    assert "quarantine" in set(_rejected_for(result, row=corrupted["lines"]["missing"])["expectation"])


@pytest.mark.parametrize("file", list(IMAGE_KINDS))
def test_each_bad_image_kind_fails_its_expectation_and_names_the_file(corrupted: dict, file: str) -> None:
    result = corrupted["result"]
    _, column, expectation = IMAGE_KINDS[file]
    failure = _failure(result, "images", column)
    examples = [example["file"] for example in failure["examples"]]
    assert file in examples or len(examples) == EXAMPLES_PER_FAILURE  # a sample; rejected.csv names every file
    assert f"{expectation}({column})" in set(_rejected_for(result, file=file)["expectation"])
    assert file not in result.kept_image_ids


def test_decode_errors_say_why(corrupted: dict) -> None:
    reasons = corrupted["result"].rejected.set_index("file")["reason"]
    assert "truncated JPEG" in reasons[f"{IMAGES_DIR}/aaaaaaaa1.jpg"]
    assert "not a JPEG/PNG/BMP/TIFF" in reasons[f"{IMAGES_DIR}/aaaaaaaa2.jpg"]
    assert "60000x60000" in reasons[f"{IMAGES_DIR}/aaaaaaaa6.jpg"]
    assert "30000x30000" in reasons[f"{IMAGES_DIR}/aaaaaaaa7.jpg"]
    assert "over the pixel budget" in reasons[f"{IMAGES_DIR}/aaaaaaaa7.jpg"]
    assert "Corrupt JPEG data" in reasons[f"{IMAGES_DIR}/aaaaaaaa8.jpg"]
    assert "symlinks must point inside it" in reasons[f"{IMAGES_DIR}/aaaaaaaa9.jpg"]


def test_exact_duplicate_images_are_a_warning_not_a_rejection(corrupted: dict) -> None:
    result = corrupted["result"]
    failure = _failure(result, "images", "pixel_sha1")
    assert failure["severity"] == "warning"
    assert sorted([corrupted["clean"][-1], "cccccccc1.jpg"]) in result.duplicates
    assert {corrupted["clean"][-1], "cccccccc1.jpg"} <= set(result.kept_image_ids)


def test_quarantine_drops_exactly_the_bad_rows_and_images(corrupted: dict) -> None:
    result, root = corrupted["result"], corrupted["root"]
    dataset = Dataset.open(str(root))
    bad_images = set(IMAGE_KINDS) | set(corrupted["clean"][: len(LABEL_KINDS)])
    duplicated = dataset.labels.loc[dataset.labels["row"] == corrupted["duplicate_of"], "ImageId"].item()
    bad_images.add(duplicated)
    assert result.success
    assert set(result.kept_image_ids) == set(dataset.image_ids) - bad_images
    expected_rows = set(dataset.labels.loc[dataset.labels["ImageId"].isin(result.kept_image_ids), "row"])
    assert set(result.kept_label_rows) == expected_rows
    assert result.n_rejected_images == len(bad_images)
    assert result.n_rejected_rows == len(dataset.labels) - len(expected_rows)
    # the cleaned dataset is what the manifest names, and the next stage can reopen it
    clean = result.clean(dataset)
    root_again, ids, rows, data_hash = load_manifest(result.manifest_path)
    reopened = Dataset.open(root_again).restrict(ids, rows)
    assert reopened.image_ids == clean.image_ids and data_hash == result.data_hash
    assert reopened.labels["row"].tolist() == clean.labels["row"].tolist()
    for image_id in clean.image_ids[:3]:
        clean.masks(image_id)  # every kept mask decodes


def test_the_cleaned_dataset_validates_clean_with_the_same_hash(corrupted: dict, tmp_path: Path) -> None:
    result = corrupted["result"]
    clean = result.clean(Dataset.open(str(corrupted["root"])))
    again = validate_dataset(clean, ValidationSettings(), tmp_path / "report", mode="fail")
    assert again.success, again.failed_expectations
    assert [f["severity"] for f in again.failed_expectations] == ["warning"]  # the duplicate pair stays
    assert again.data_hash == result.data_hash


def test_rejected_csv_and_summary_explain_the_drops(corrupted: dict) -> None:
    result = corrupted["result"]
    on_disk = pd.read_csv(result.rejected_path, dtype={"row": "Int64"})
    assert list(on_disk.columns) == ["file", "row", "expectation", "reason"]
    assert len(on_disk) == len(result.rejected)
    summary = json.loads(result.summary_path.read_text())
    assert summary["n_rejected_rows"] == result.n_rejected_rows
    assert summary["n_rejected_images"] == result.n_rejected_images
    assert summary["rejected_by_expectation"]["expect_column_values_to_be_between(rle_min_gap)"] == 1
    assert summary["data_hash"] == result.data_hash != summary["input_hash"]
    docs = result.docs_index.read_text()
    assert result.docs_index.parent == result.summary_path.parent / "data_docs"
    assert "labels" in docs and "images" in docs and "dataset" in docs


# --------------------------------------------------------------------------------------------------
# Whole-dataset outcomes.


def test_generated_dataset_validates_clean(synthetic_dataset: Path, tmp_path: Path) -> None:
    result = _validate(synthetic_dataset, tmp_path / "report")
    assert result.success, result.failed_expectations
    assert result.failed_expectations == [] and result.rejected.empty
    assert result.n_images == 24 and len(result.kept_image_ids) == 24
    assert result.manifest_path is not None and result.manifest_path.exists()
    assert result.docs_index.exists()
    pages = list((tmp_path / "report" / "data_docs" / "validations").rglob("*.html"))
    assert len(pages) == 3  # one validation page per suite
    assert result.data_hash == result.input_hash and len(result.data_hash) == 64


def test_the_image_scan_reports_its_progress_file_by_file(synthetic_dataset: Path) -> None:
    dataset = Dataset.open(synthetic_dataset)
    calls: list[tuple[int, int]] = []
    records = scan_image_files(
        dataset, dataset.image_ids, workers=2, progress=lambda done, total: calls.append((done, total))
    )
    assert len(records) == len(dataset.image_ids) == 24
    assert calls == [(done, 24) for done in range(1, 25)]


def test_fail_mode_rejects_the_dataset_on_one_bad_row(synthetic_dataset: Path, tmp_path: Path) -> None:
    root = _copy(synthetic_dataset, tmp_path / "data")
    [line] = _append_rows(root, [(_clean_ids(root)[0], "2", "10 5 12 5")])
    result = _validate(root, tmp_path / "report", mode="fail")
    assert not result.success and result.manifest_path is None
    assert not (tmp_path / "report" / "manifest.json").exists()
    named = _rejected_for(result, row=line)["expectation"].tolist()
    assert named == ["expect_column_values_to_be_between(rle_min_gap)"]
    with pytest.raises(ValidationFailed, match=r"labels.expect_column_values_to_be_between\(rle_min_gap\)") as info:
        result.raise_if_failed()
    assert info.value.result is result
    with pytest.raises(ValidationFailed):
        result.clean(Dataset.open(str(root)))


def test_empty_dataset_fails_clearly(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / IMAGES_DIR).mkdir(parents=True)
    (root / LABELS_FILE).write_text("ImageId,ClassId,EncodedPixels\n")
    result = _validate(root, tmp_path / "report", mode="quarantine")
    assert not result.success and result.n_images == 0
    failure = _failure(result, "dataset", "images")
    assert failure["examples"][0]["images"] == 0
    assert failure["description"] == "Enough valid images"


def test_all_clean_dataset_fails_on_defect_rate_and_classes(synthetic_dataset: Path, tmp_path: Path) -> None:
    root = _copy(synthetic_dataset, tmp_path / "data")
    (root / LABELS_FILE).write_text("ImageId,ClassId,EncodedPixels\n")
    result = _validate(root, tmp_path / "report")
    assert not result.success
    assert _failure(result, "dataset", "defect_rate")["examples"][0]["defect_rate"] == 0
    assert _failure(result, "dataset", "missing_classes")["examples"][0]["missing_class_ids"] == "1,2,3,4"
    assert {f["suite"] for f in result.failed_expectations} == {"dataset"}


def test_old_format_csv_validates_with_its_own_line_numbers(synthetic_dataset: Path, tmp_path: Path) -> None:
    new = Dataset.open(str(synthetic_dataset))
    root = _copy(synthetic_dataset, tmp_path / "data")
    masks = {(r.ImageId, r.ClassId): r.EncodedPixels for r in new.labels.itertuples()}
    old = pd.DataFrame(
        [(f"{i}_{c}", masks.get((i, str(c)), "")) for i in new.image_ids for c in (1, 2, 3, 4)],
        columns=["ImageId_ClassId", "EncodedPixels"],
    )
    bad_line = int(old.index[old["EncodedPixels"] != ""][0]) + 2
    old.to_csv(root / LABELS_FILE, index=False)
    clean = _validate(root, tmp_path / "report-clean")
    assert clean.success and clean.n_label_rows == len(new.labels)
    new_result = _validate(synthetic_dataset, tmp_path / "report-new")
    assert clean.data_hash == new_result.data_hash  # the hash names the data, not the CSV layout

    old.loc[bad_line - 2, "EncodedPixels"] = "7 3 1 2"
    old.to_csv(root / LABELS_FILE, index=False)
    broken = _validate(root, tmp_path / "report-broken", mode="quarantine", min_valid_fraction=0.5)
    named = _rejected_for(broken, row=bad_line)["expectation"].tolist()
    assert named == ["expect_column_values_to_be_between(rle_min_step)"]
    assert broken.data_hash != clean.data_hash


def test_real_severstal_sample_passes_the_image_checks(severstal_sample: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(severstal_sample / IMAGES_DIR, root / IMAGES_DIR)
    (root / LABELS_FILE).write_text("ImageId,ClassId,EncodedPixels\n")  # the sample has no masks
    result = _validate(root, tmp_path / "report")
    assert result.n_images == 10
    assert [f for f in result.failed_expectations if f["suite"] != "dataset"] == []
    assert result.rejected.empty


# --------------------------------------------------------------------------------------------------
# The command line.


def test_cli_exit_codes_follow_the_mode(synthetic_dataset: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    root = _copy(synthetic_dataset, tmp_path / "data")
    clean = _clean_ids(root)
    _append_rows(root, [(clean[0], "1", "1 3 5"), (clean[1], "9", "1 5"), (clean[2], "1", "0 5")])

    failed = runner.invoke(app, ["validate", str(root), "--report", str(tmp_path / "r1")])
    assert failed.exit_code == 1, failed.output
    assert "Failed expectations" in failed.output and "rle_pairs" in failed.output
    assert json.loads(failed.stdout.strip().splitlines()[-1])["success"] is False

    # 21/24 images survive: below the default 0.9 valid fraction, above 0.5
    too_few = runner.invoke(app, ["validate", str(root), "-r", str(tmp_path / "r2"), "--quarantine"])
    assert too_few.exit_code == 1 and "valid_fraction" in too_few.output
    lenient = ["--quarantine", "--set", "validation.min_valid_fraction=0.5"]
    enough = runner.invoke(app, ["validate", str(root), "-r", str(tmp_path / "r3"), *lenient])
    assert enough.exit_code == 0, enough.output
    assert "kept 21/24 images" in enough.output
    assert (tmp_path / "r3" / "manifest.json").exists() and (tmp_path / "r3" / "rejected.csv").exists()


def test_cli_bad_input_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "dataset folder not found" in result.output


def test_cli_relative_report_folder_works(
    synthetic_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["validate", str(synthetic_dataset), "--report", "reports/v1"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "reports" / "v1" / "summary.json").read_text())
    assert summary["reports"]["manifest"] == str(tmp_path / "reports" / "v1" / "manifest.json")  # absolute
    assert (tmp_path / "reports" / "v1" / "data_docs" / "index.html").exists()


def test_cli_failure_leaves_no_half_written_report(
    synthetic_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_error(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("steelqc.validation.scan_images", disk_error)
    result = CliRunner().invoke(app, ["validate", str(synthetic_dataset), "--report", str(tmp_path / "new" / "report")])
    assert result.exit_code == 2 and "No space left on device" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # a message, not a traceback
    assert not (tmp_path / "new").exists()


def test_cli_default_report_goes_to_the_state_dir(synthetic_dataset: Path, isolated_state: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(synthetic_dataset)])
    assert result.exit_code == 0, result.output
    [report] = (isolated_state / "reports").glob("validation-*")
    assert (report / "summary.json").exists() and (report / "data_docs" / "index.html").exists()


def test_dataset_on_s3_validates_with_the_same_hash_as_on_disk(
    synthetic_dataset: Path, moto_s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_s3_endpoint)
    boto3.client("s3").create_bucket(Bucket="steelqc-data")
    generate_dataset("s3://steelqc-data/synth", 24, 0, contrast=1.5)  # the same bytes as synthetic_dataset
    dataset = Dataset.open("s3://steelqc-data/synth")
    result = validate_dataset(dataset, ValidationSettings(), tmp_path / "report", workers=4)
    assert result.success, result.failed_expectations
    local = Dataset.open(str(synthetic_dataset))
    images = scan_images(local)
    content = dict(zip(images["file"], images["byte_sha1"], strict=True))
    assert result.data_hash == compute_data_hash(local.labels, content)
