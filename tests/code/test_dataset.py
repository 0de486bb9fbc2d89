"""The Severstal layout: both CSV formats, metadata, and every bad input raising a typed error naming the file/row."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from steelqc.data.dataset import Dataset, DatasetMeta, check_image_id, labels_to_csv, parse_labels_csv
from steelqc.data.errors import (
    DatasetError,
    ImageDecodeError,
    ImageSizeError,
    LabelFormatError,
    MissingImageError,
    PathEscapeError,
    RLEError,
    UnsafeImageIdError,
)
from steelqc.data.images import decode_image_bytes, encode_jpeg, encode_png, read_image, sniff_format
from steelqc.data.rle import encode_rle

H, W = 8, 10
META = DatasetMeta(name="tiny", height=H, width=W, image_id_pattern=r"^[a-z0-9]+\.jpg$")


def _pixels(value: int = 120) -> np.ndarray:
    return np.full((H, W), value, np.uint8)


def _write(root: Path, csv: str, images: dict[str, bytes], meta: DatasetMeta | None = META) -> Path:
    (root / "train_images").mkdir(parents=True)
    (root / "train.csv").write_text(csv)
    if meta is not None:
        (root / "dataset.yaml").write_text(meta.to_yaml())
    for name, data in images.items():
        (root / "train_images" / name).write_bytes(data)
    return root


def test_new_format_labels_masks_and_clean_images(tmp_path: Path) -> None:
    csv = "ImageId,ClassId,EncodedPixels\naaa.jpg,1,1 3\naaa.jpg,3,17 2\nbbb.jpg,4,1 80\n"
    root = _write(tmp_path, csv, {n: encode_png(_pixels()) for n in ("aaa.jpg", "bbb.jpg", "ccc.jpg")})
    ds = Dataset.open(str(root))
    assert ds.image_ids == ("aaa.jpg", "bbb.jpg", "ccc.jpg")
    assert ds.labels.columns.tolist() == ["ImageId", "ClassId", "EncodedPixels", "row"]
    assert ds.labels["row"].tolist() == [2, 3, 4]
    masks = ds.masks("aaa.jpg")
    assert masks.shape == (4, H, W)
    assert masks[0, :3, 0].all() and masks[0].sum() == 3
    assert masks[2, 0:2, 2].all() and masks[2].sum() == 2
    assert ds.masks("bbb.jpg")[3].all()
    assert ds.class_set("aaa.jpg") == (1, 3)
    assert ds.class_set("ccc.jpg") == () and not ds.masks("ccc.jpg").any()
    small = ds.restrict(["aaa.jpg"], label_rows=[2])
    assert small.image_ids == ("aaa.jpg",) and small.labels["row"].tolist() == [2]


def test_old_format_with_four_rows_per_image(tmp_path: Path) -> None:
    rows = ["ImageId_ClassId,EncodedPixels"]
    rows += [f"aaa.jpg_{c}," + ("1 3" if c == 2 else "") for c in (1, 2, 3, 4)]
    rows += [f"bbb.jpg_{c}," for c in (1, 2, 3, 4)]
    root = _write(tmp_path, "\n".join(rows) + "\n", {n: encode_png(_pixels()) for n in ("aaa.jpg", "bbb.jpg")})
    ds = Dataset.open(str(root))
    assert ds.labels[["ImageId", "ClassId", "EncodedPixels", "row"]].values.tolist() == [["aaa.jpg", "2", "1 3", 3]]
    assert ds.labels.attrs["known_image_ids"] == ["aaa.jpg", "bbb.jpg"]
    assert ds.class_set("aaa.jpg") == (2,) and ds.class_set("bbb.jpg") == ()


def test_labels_csv_round_trip() -> None:
    data = b"ImageId,ClassId,EncodedPixels\naaa.jpg,1,1 3\n"
    labels = parse_labels_csv(data)
    assert labels_to_csv(labels) == data


@pytest.mark.parametrize(
    "csv",
    ["foo,bar\n1,2\n", "ImageId_ClassId,EncodedPixels\naaajpg,1 3\n", ""],
)
def test_bad_labels_csv_raises(csv: str) -> None:
    with pytest.raises(LabelFormatError) as info:
        parse_labels_csv(csv.encode(), file="x/train.csv")
    assert info.value.file == "x/train.csv"


@pytest.mark.parametrize(
    "csv",
    [
        # pandas would read the first column as an index and shift the rest: ImageId "1", ClassId "1 3"
        "ImageId,ClassId,EncodedPixels\naaa.jpg,1,1 3,\nbbb.jpg,2,5 2,\n",
        "ImageId,ClassId,EncodedPixels\naaa.jpg,1,1 3\nbbb.jpg,2,5 2,\n",  # a later line: the parser's own error
    ],
)
def test_extra_fields_are_an_error_not_shifted_columns(csv: str) -> None:
    with pytest.raises(LabelFormatError) as info:
        parse_labels_csv(csv.encode(), file="x/train.csv")
    assert info.value.file == "x/train.csv"


def test_bad_rle_and_class_name_their_row(tmp_path: Path) -> None:
    csv = "ImageId,ClassId,EncodedPixels\naaa.jpg,1,1 3\nbbb.jpg,9,1 3\nccc.jpg,2,5 1 2 1\n"
    root = _write(tmp_path, csv, {})
    ds = Dataset.open(str(root))
    with pytest.raises(LabelFormatError, match="ClassId") as info:
        ds.masks("bbb.jpg")
    assert info.value.row == 3
    with pytest.raises(LabelFormatError, match="ClassId") as info:
        ds.class_set("bbb.jpg")  # typed like masks(), not a bare ValueError or a class the dataset lacks
    assert info.value.row == 3
    with pytest.raises(RLEError, match="not sorted") as rle_info:
        ds.masks("ccc.jpg")
    assert rle_info.value.row == 4 and rle_info.value.file == "train.csv"


@pytest.mark.parametrize("image_id", ["a/b.jpg", "a\\b.jpg", "..", "..evil.jpg", "../train.csv", "", "   "])
def test_unsafe_image_ids_raise(tmp_path: Path, image_id: str) -> None:
    with pytest.raises(UnsafeImageIdError):
        check_image_id(image_id, row=5)
    ds = Dataset.open(str(_write(tmp_path, "ImageId,ClassId,EncodedPixels\n", {})))
    with pytest.raises(UnsafeImageIdError):
        ds.load_image(image_id)


def test_missing_image_file_names_the_path(tmp_path: Path) -> None:
    ds = Dataset.open(str(_write(tmp_path, "ImageId,ClassId,EncodedPixels\nzzz.jpg,1,1 3\n", {})))
    with pytest.raises(MissingImageError) as info:
        ds.load_image("zzz.jpg")
    assert info.value.file is not None and info.value.file.endswith("train_images/zzz.jpg")


def test_missing_folder_or_csv_raises(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset folder not found"):
        Dataset.open(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no train.csv"):
        Dataset.open(str(tmp_path / "empty"))


def test_train_csv_that_is_a_folder_says_so(tmp_path: Path) -> None:
    (tmp_path / "train.csv").mkdir()
    with pytest.raises(DatasetError, match="train.csv is a folder; it must be the labels CSV file"):
        Dataset.open(str(tmp_path))


def test_csv_without_header_shows_the_start_of_the_first_row_not_its_whole_rle() -> None:
    rle = " ".join(f"{start} 3" for start in range(1, 40_000, 7))
    with pytest.raises(LabelFormatError) as info:
        parse_labels_csv(f"0002cc93b.jpg,1,{rle}\n0007a71bf.jpg,3,{rle}\n".encode())
    message = str(info.value)
    assert "expected the header line ImageId,ClassId,EncodedPixels" in message
    assert "'0002cc93b.jpg'" in message and f"({len(rle)} characters)" in message
    assert len(message) < 400 and info.value.row == 1


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (encode_jpeg(_pixels())[:-40], "truncated JPEG"),
        (encode_png(_pixels())[:-30], "truncated PNG"),
        (b"this is not an image at all", "not a JPEG/PNG"),
        (b"", "empty file"),
        (b"\xff\xd8\xff" + b"\x00" * 50 + b"\xff\xd9", "could not be decoded"),
    ],
)
def test_bad_image_bytes_raise_naming_the_file(tmp_path: Path, data: bytes, reason: str) -> None:
    ds = Dataset.open(str(_write(tmp_path, "ImageId,ClassId,EncodedPixels\n", {"bad.jpg": data})))
    with pytest.raises(ImageDecodeError, match=reason) as info:
        ds.load_image("bad.jpg")
    assert info.value.file is not None and info.value.file.endswith("bad.jpg")


def test_wrong_size_raises(tmp_path: Path) -> None:
    big = encode_png(np.zeros((H + 1, W), np.uint8))
    ds = Dataset.open(str(_write(tmp_path, "ImageId,ClassId,EncodedPixels\n", {"big.jpg": big})))
    with pytest.raises(ImageSizeError, match=f"{H + 1}x{W}, expected {H}x{W}") as info:
        ds.load_image("big.jpg")
    assert info.value.file.endswith("big.jpg")  # type: ignore[union-attr]


def test_grayscale_and_three_channel_decode_by_content(tmp_path: Path) -> None:
    gray = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    bgr = np.dstack([gray] * 3)
    ok, png3 = cv2.imencode(".png", bgr)
    files = {"g.jpg": encode_png(gray), "c.jpg": png3.tobytes(), "j.jpg": encode_jpeg(gray, quality=100)}
    ds = Dataset.open(str(_write(tmp_path, "ImageId,ClassId,EncodedPixels\n", files)))
    np.testing.assert_array_equal(ds.load_image("g.jpg"), gray)  # PNG data under a .jpg name
    np.testing.assert_array_equal(ds.load_image("c.jpg"), gray)  # R=G=B → the same grey values
    assert np.abs(ds.load_image("j.jpg").astype(int) - gray).max() <= 2
    decoded = decode_image_bytes(png3.tobytes(), name="c")
    assert (decoded.format, decoded.channels, decoded.pixels.ndim) == ("png", 3, 2)
    assert sniff_format(files["j.jpg"]) == "jpeg"
    (tmp_path / "file.png").write_bytes(files["g.jpg"])
    np.testing.assert_array_equal(read_image(tmp_path / "file.png"), gray)


def test_symlinks_inside_the_root_are_followed(tmp_path: Path) -> None:
    root = _write(tmp_path / "root", "ImageId,ClassId,EncodedPixels\n", {})
    (root / "store").mkdir()
    (root / "store" / "real.png").write_bytes(encode_png(_pixels(7)))
    (root / "train_images").rmdir()
    (root / "train_images").symlink_to(root / "store")
    (root / "store" / "alias.png").symlink_to("real.png")
    (tmp_path / "root-link").symlink_to(root)  # the root itself may be a symlink
    ds = Dataset.open(str(tmp_path / "root-link"))
    assert ds.image_ids == ("alias.png", "real.png")
    np.testing.assert_array_equal(ds.load_image("alias.png"), _pixels(7))


def test_a_symlinked_images_folder_outside_the_root_is_refused_with_the_rule(tmp_path: Path) -> None:
    source = _write(tmp_path / "source", "ImageId,ClassId,EncodedPixels\n", {"aaa.jpg": encode_png(_pixels(7))})
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "train.csv").write_text("ImageId,ClassId,EncodedPixels\n")
    (linked / "train_images").symlink_to(source / "train_images")
    with pytest.raises(PathEscapeError, match=r"outside the root .*\(symlinks must point inside it\)"):
        Dataset.open(str(linked))


def test_a_file_symlink_out_of_the_root_is_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    root = _write(tmp_path / "root", "ImageId,ClassId,EncodedPixels\n", {"good.jpg": encode_png(_pixels())})
    (root / "train_images" / "passwd.jpg").symlink_to(secret)
    ds = Dataset.open(str(root))
    assert ds.image_ids == ("good.jpg", "passwd.jpg")  # listed, so it is reported rather than missing
    with pytest.raises(PathEscapeError, match=f"resolves to {secret}, outside the root") as info:
        ds.image_bytes("passwd.jpg")
    assert info.value.file == "train_images/passwd.jpg"
    (root / "train.csv").unlink()
    (root / "train.csv").symlink_to(secret)
    with pytest.raises(PathEscapeError, match="train.csv"):
        Dataset.open(str(root))


def test_a_dangling_images_folder_symlink_says_so_instead_of_looking_empty(tmp_path: Path) -> None:
    root = _write(tmp_path / "root", "ImageId,ClassId,EncodedPixels\n", {})
    (root / "train_images").rmdir()
    (root / "train_images").symlink_to(root / "no-such-folder")
    with pytest.raises(DatasetError, match="'train_images' is a symlink to .*no-such-folder, which is not a folder"):
        Dataset.open(str(root))


def test_metadata_round_trip_and_defaults(tmp_path: Path) -> None:
    meta = DatasetMeta(
        name="neu", classes={1: "crazing", 2: "inclusion"}, height=200, width=200, image_id_pattern=r"^x$"
    )
    assert DatasetMeta.from_yaml(meta.to_yaml()) == meta
    assert meta.class_ids == [1, 2]
    default = Dataset.open(str(_write(tmp_path, "ImageId,ClassId,EncodedPixels\n", {}, meta=None))).meta
    assert default == DatasetMeta() and (default.height, default.width) == (256, 1600)
    assert default.classes == {1: "pits", 2: "vertical_marks", 3: "scratches", 4: "patches"}


@pytest.mark.parametrize(
    "text", ["height: -1\n", "classes: {x: a}\n", "image_id_pattern: '('\n", "- a\n- b\n", "a: [\n"]
)
def test_invalid_metadata_raises(text: str) -> None:
    with pytest.raises(DatasetError) as info:
        DatasetMeta.from_yaml(text, file="d/dataset.yaml")
    assert info.value.file == "d/dataset.yaml"


def test_generated_rle_reads_back(tmp_path: Path) -> None:
    mask = np.zeros((H, W), bool)
    mask[2:5, 3:7] = True
    csv = f"ImageId,ClassId,EncodedPixels\naaa.jpg,2,{encode_rle(mask)}\n"
    ds = Dataset.open(str(_write(tmp_path, csv, {"aaa.jpg": encode_png(_pixels())})))
    np.testing.assert_array_equal(ds.masks("aaa.jpg")[1], mask)
