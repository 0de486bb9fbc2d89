"""Image-and-mask import on a crafted folder: pairing, classes, one size, masks exact through RLE, bad input named."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from steelqc.cli import app
from steelqc.data.dataset import IMAGES_DIR, Dataset
from steelqc.data.errors import DatasetError, ImageDecodeError, ImageSizeError, MaskError
from steelqc.data.images import decode_mask_bytes, encode_jpeg
from steelqc.data.import_common import IMAGE_ID_PATTERN
from steelqc.data.mask_importer import MAPPING_FILE, import_masks, most_common_size
from steelqc.data.mask_pairing import assign_image_ids, class_names
from steelqc.data.storage import open_storage

runner = CliRunner()


def _image(path: Path, height: int, width: int, seed: int) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(40, 200, (height, width), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_jpeg(pixels))
    return pixels


def _mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), mask)


def _box(height: int, width: int, y0: int, y1: int, x0: int, x1: int, value: int = 255) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[y0:y1, x0:x1] = value
    return mask


@pytest.fixture
def tile(tmp_path: Path) -> Path:
    """Magnetic-tile layout: two defect folders, a clean one; four 40x30 images, one 50x20 with a colour mask."""
    src = tmp_path / "tile"
    _image(src / "MT_Crack/Imgs/a.jpg", 40, 30, 1)
    _mask(src / "MT_Crack/Imgs/a.png", _box(40, 30, 5, 15, 3, 9, value=7))  # grey, not 0/255: any non-zero counts
    _image(src / "MT_Crack/Imgs/b.jpg", 40, 30, 2)
    _mask(src / "MT_Crack/Imgs/b.png", _box(40, 30, 20, 38, 10, 12))
    _image(src / "MT_Spot/Imgs/c.jpg", 50, 20, 3)
    colour = np.zeros((50, 20, 3), np.uint8)
    colour[10:20, 4:8] = (0, 0, 255)  # red
    colour[30:32, 12:14] = (1, 0, 0)  # a blue so dark that it is 0 in grey
    _mask(src / "MT_Spot/Imgs/c.png", colour)
    _image(src / "MT_Free/Imgs/d.jpg", 40, 30, 4)
    _mask(src / "MT_Free/Imgs/d.png", np.zeros((40, 30), np.uint8))
    _image(src / "MT_Free/Imgs/e.jpg", 40, 30, 5)  # a clean folder needs no masks
    return src


def _mapping(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / MAPPING_FILE, dtype=str, keep_default_na=False).set_index("ImageId")


def test_folders_become_classes_and_the_most_common_size_wins(tile: Path, tmp_path: Path) -> None:
    summary = import_masks(tile, tmp_path / "out")
    ds = Dataset.open(str(tmp_path / "out"))
    assert summary.classes == ds.meta.classes == {1: "Crack", 2: "Spot"}  # MT_ stripped, clean folder no class
    assert (ds.meta.height, ds.meta.width) == (summary.height, summary.width) == (40, 30)
    assert ds.meta.image_id_pattern == IMAGE_ID_PATTERN
    assert ds.image_ids == ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg")  # the .png masks are not images
    assert [ds.class_set(i) for i in ds.image_ids] == [(1,), (1,), (2,), (), ()]
    assert (summary.images, summary.clean, summary.masks_per_class) == (5, 2, {1: 2, 2: 1})
    assert (summary.resized, summary.padded, summary.renamed) == (1, 0, 0)
    assert all(ds.load_image(i).shape == (40, 30) for i in ds.image_ids)
    assert (tile / "MT_Crack/Imgs/a.jpg").read_bytes() == ds.image_bytes("a.jpg")  # right size, grey JPEG: kept
    mapping = _mapping(tmp_path / "out")
    assert (
        mapping.loc["c.jpg", "image"] == "MT_Spot/Imgs/c.jpg" and mapping.loc["c.jpg", "mask"] == "MT_Spot/Imgs/c.png"
    )
    assert mapping.loc["e.jpg", "mask"] == "" and mapping.loc["e.jpg", "class"] == ""


def test_masks_round_trip_through_rle_exactly_after_resize(tile: Path, tmp_path: Path) -> None:
    import_masks(tile, tmp_path / "out", image_size=(24, 18))
    ds = Dataset.open(str(tmp_path / "out"))
    for image_id, folder, k in [("a.jpg", "MT_Crack", 0), ("b.jpg", "MT_Crack", 0), ("c.jpg", "MT_Spot", 1)]:
        source = decode_mask_bytes((tile / folder / "Imgs" / image_id.replace(".jpg", ".png")).read_bytes())
        expected = cv2.resize(source.astype(np.uint8), (18, 24), interpolation=cv2.INTER_NEAREST).astype(bool)
        assert expected.any() and np.array_equal(ds.masks(image_id)[k], expected), image_id
        assert not ds.masks(image_id)[1 - k].any()


def test_colour_mask_is_defective_wherever_any_channel_is_non_zero(tile: Path) -> None:
    mask = decode_mask_bytes((tile / "MT_Spot/Imgs/c.png").read_bytes())
    assert mask.sum() == 10 * 4 + 2 * 2 and mask[30, 12]


def test_pad_puts_the_image_top_left_and_shrinks_what_does_not_fit(tile: Path, tmp_path: Path) -> None:
    summary = import_masks(tile, tmp_path / "out", image_size=(60, 30), fit="pad")
    ds = Dataset.open(str(tmp_path / "out"))
    assert (summary.resized, summary.padded) == (0, 5)
    a = ds.load_image("a.jpg")
    assert a.shape == (60, 30) and a[:40].mean() > 40 and a[44:].max() < 10  # JPEG ringing only at the seam
    mask = ds.masks("a.jpg")[0]
    assert mask[5:15, 3:9].all() and mask.sum() == 60  # unscaled, so exactly the source box
    squeezed = import_masks(tile, tmp_path / "out2", image_size=(40, 30), fit="pad")  # c is 50x20: shrunk to 40x16
    assert (squeezed.resized, squeezed.padded) == (1, 1)
    c = Dataset.open(str(tmp_path / "out2")).masks("c.jpg")[1]
    assert c[:, 16:].sum() == 0 and c[:, :16].any()


def test_thin_defect_survives_a_downscale_that_nearest_sampling_misses(tmp_path: Path) -> None:
    src = tmp_path / "thin"
    _image(src / "Scratch/x.jpg", 64, 64, 1)
    _mask(src / "Scratch/x.png", _box(64, 64, 0, 64, 1, 2))  # one column wide; nearest at 1/8 samples column 0, 8, …
    _image(src / "good/y.jpg", 64, 64, 2)
    summary = import_masks(src, tmp_path / "out", image_size=(8, 8))
    ds = Dataset.open(str(tmp_path / "out"))
    assert ds.masks("x.jpg")[0][:, 0].all() and ds.masks("x.jpg")[0].sum() == 8 and summary.masks_kept_by_area == 1
    assert "area resample" in _mapping(tmp_path / "out").loc["x.jpg", "note"]


def test_parallel_masks_folder_and_a_flat_tree_is_one_class(tmp_path: Path) -> None:
    src = tmp_path / "flat"
    _image(src / "images/p.png", 20, 20, 1)  # PNG images: the masks/ folder, not the suffix, tells them apart
    _mask(src / "masks/p.png", _box(20, 20, 2, 4, 2, 4))
    _image(src / "images/q.png", 20, 20, 2)
    _mask(src / "masks/q.png", np.zeros((20, 20), np.uint8))
    _image(src / "good/r.jpg", 20, 20, 3)
    summary = import_masks(src, tmp_path / "out")
    ds = Dataset.open(str(tmp_path / "out"))
    assert summary.classes == {1: "defect"} and ds.image_ids == ("p.jpg", "q.jpg", "r.jpg")
    assert [ds.class_set(i) for i in ds.image_ids] == [(1,), (), ()] and summary.empty_masks_clean == 1


def test_own_mask_pattern_and_clean_folder_names(tmp_path: Path) -> None:
    src = tmp_path / "own"
    _image(src / "Dent/x.jpg", 20, 20, 1)
    _mask(src / "gt/Dent/x_defect.png", _box(20, 20, 0, 3, 0, 3))
    _image(src / "accepted/y.jpg", 20, 20, 2)
    summary = import_masks(
        src, tmp_path / "out", mask_patterns=["../gt/{folder}/{stem}_defect.png"], clean_folders=["Accepted"]
    )
    assert summary.classes == {1: "Dent"} and summary.masks_per_class == {1: 1} and summary.clean == 1
    with pytest.raises(ValueError, match="may only use"):
        import_masks(src, tmp_path / "out2", mask_patterns=["{name}.png"])


def test_single_class_for_all(tile: Path, tmp_path: Path) -> None:
    summary = import_masks(tile, tmp_path / "out", class_from="single")
    assert summary.classes == {1: "defect"} and summary.masks_per_class == {1: 3} and summary.clean == 2


def test_empty_mask_in_a_defect_folder_is_clean_and_noted_or_an_error(tile: Path, tmp_path: Path) -> None:
    _mask(tile / "MT_Crack/Imgs/b.png", np.zeros((40, 30), np.uint8))
    summary = import_masks(tile, tmp_path / "out")
    assert Dataset.open(str(tmp_path / "out")).class_set("b.jpg") == () and summary.empty_masks_clean == 1
    assert _mapping(tmp_path / "out").loc["b.jpg", "note"] == "empty mask in a defect folder: written clean"
    with pytest.raises(MaskError, match="empty mask in defect folder 'MT_Crack'") as info:
        import_masks(tile, tmp_path / "out2", empty_mask="error")
    assert info.value.file == str(tile / "MT_Crack/Imgs/b.png")


def test_missing_mask_in_a_defect_folder_is_an_error_unless_asked(tile: Path, tmp_path: Path) -> None:
    (tile / "MT_Crack/Imgs/b.png").unlink()
    with pytest.raises(MaskError, match="no mask for this image in defect folder 'MT_Crack'") as info:
        import_masks(tile, tmp_path / "out")
    assert info.value.file == str(tile / "MT_Crack/Imgs/b.jpg")
    summary = import_masks(tile, tmp_path / "out", missing_mask="clean")
    assert (
        summary.missing_masks_clean == 1 and _mapping(tmp_path / "out").loc["b.jpg", "note"] == "no mask: written clean"
    )


def test_defect_pixels_in_a_clean_folder_are_an_error(tile: Path, tmp_path: Path) -> None:
    _mask(tile / "MT_Free/Imgs/d.png", _box(40, 30, 0, 1, 0, 3))
    with pytest.raises(MaskError, match="3 defect pixels in a mask in clean folder 'MT_Free'") as info:
        import_masks(tile, tmp_path / "out")
    assert info.value.file == str(tile / "MT_Free/Imgs/d.png")


def test_mask_of_another_size_names_the_mask(tile: Path, tmp_path: Path) -> None:
    _mask(tile / "MT_Crack/Imgs/b.png", _box(40, 31, 0, 2, 0, 2))
    with pytest.raises(ImageSizeError, match="mask is 40x31 but its image MT_Crack/Imgs/b.jpg is 40x30") as info:
        import_masks(tile, tmp_path / "out")
    assert info.value.file == str(tile / "MT_Crack/Imgs/b.png")


@pytest.mark.parametrize(("name", "data"), [("e.jpg", b"not an image"), ("d.png", None)])
def test_corrupt_file_is_named_and_nothing_is_left_behind(
    tile: Path, tmp_path: Path, name: str, data: bytes | None
) -> None:
    path = tile / "MT_Free/Imgs" / name
    path.write_bytes(data if data is not None else path.read_bytes()[:-20])  # the PNG cut before its IEND
    with pytest.raises(ImageDecodeError) as info:
        import_masks(tile, tmp_path / "out")
    assert info.value.file == str(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tile"]  # no output, no staging folder


def test_unsafe_and_shared_names_are_renamed_with_the_source_kept(tile: Path, tmp_path: Path) -> None:
    _image(tile / "MT_Spot/Imgs/spot 1 (copy).jpg", 40, 30, 6)
    _mask(tile / "MT_Spot/Imgs/spot 1 (copy).png", _box(40, 30, 0, 5, 0, 5))
    _image(tile / "MT_Spot/Imgs/a.jpg", 40, 30, 7)  # the same stem as MT_Crack/Imgs/a.jpg
    _mask(tile / "MT_Spot/Imgs/a.png", _box(40, 30, 0, 5, 0, 5))
    summary = import_masks(tile, tmp_path / "out")
    ds = Dataset.open(str(tmp_path / "out"))
    assert {"spot_1_copy.jpg", "MT_Crack_Imgs_a.jpg", "MT_Spot_Imgs_a.jpg"} <= set(ds.image_ids)
    assert summary.renamed == 3 and "a.jpg" not in ds.image_ids
    mapping = _mapping(tmp_path / "out")
    assert mapping.loc["spot_1_copy.jpg", "image"] == "MT_Spot/Imgs/spot 1 (copy).jpg"
    assert mapping.loc["MT_Spot_Imgs_a.jpg", "note"] == "renamed to a safe, unique ImageId"
    assert ds.class_set("MT_Spot_Imgs_a.jpg") == (2,)


def test_a_file_named_like_a_mask_without_its_image_is_an_error(tile: Path, tmp_path: Path) -> None:
    _mask(tile / "MT_Crack/Imgs/lost_mask.png", _box(40, 30, 0, 2, 0, 2))
    with pytest.raises(MaskError, match="named like a mask but no image pairs with it") as info:
        import_masks(tile, tmp_path / "out")
    assert info.value.file == str(tile / "MT_Crack/Imgs/lost_mask.png")


def test_refuses_a_non_empty_output_and_an_output_inside_the_source(tile: Path, tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not an empty folder"):
        import_masks(tile, tmp_path / "busy")
    with pytest.raises(DatasetError, match="inside the source folder"):
        import_masks(tile, tile / "out")
    (tmp_path / "empty").mkdir()
    assert import_masks(tile, tmp_path / "empty").images == 5


def test_pure_rules() -> None:
    assert most_common_size([(2, 3), (4, 5), (2, 3), (4, 5), (1, 1)]) == (4, 5)  # a tie goes to the larger
    assert class_names(["MT_Crack", "MT_Free"]) == {"MT_Crack": "Crack", "MT_Free": "Free"}
    assert class_names(["Class1", "Class2"]) == {"Class1": "Class1", "Class2": "Class2"}  # no separator: kept
    assert class_names(["MT_Crack"]) == {"MT_Crack": "MT_Crack"}
    ids = assign_image_ids([Path("A/x.jpg"), Path("B/X.png"), Path("C/ü.jpg"), Path("C/y.jpg")])
    assert ids == ["A_x.jpg", "B_X.jpg", "image.jpg", "y.jpg"]  # x and X would clash on a case-insensitive disk


def test_cli_prints_the_summary_and_errors_on_one_line(tile: Path, tmp_path: Path) -> None:
    ok = runner.invoke(app, ["import-masks", str(tile), "--out", str(tmp_path / "out"), "--size", "20x15"])
    assert ok.exit_code == 0, ok.output
    assert "imported 5 images (3 defective, 2 clean)" in ok.output and "at 20x15 (resize: 5 resized" in ok.output
    assert "Crack" in ok.output and "Spot" in ok.output
    (tile / "MT_Crack/Imgs/b.png").unlink()
    bad = runner.invoke(app, ["import-masks", str(tile), "--out", str(tmp_path / "o2")])
    assert bad.exit_code == 2
    assert bad.output.splitlines()[-1].startswith("error: no mask for this image in defect folder 'MT_Crack'")
    assert str(tile / "MT_Crack/Imgs/b.jpg") in bad.output.splitlines()[-1]
    for option, value, message in [
        ("--size", "20", "--size expects HEIGHTxWIDTH"),
        ("--fit", "crop", "fit must be one of"),
    ]:
        wrong = runner.invoke(app, ["import-masks", str(tile), "--out", str(tmp_path / "o3"), option, value])
        assert wrong.exit_code == 2 and message in wrong.output.splitlines()[-1], wrong.output


def test_imports_straight_into_s3_and_a_failed_import_is_no_dataset(
    tile: Path, moto_s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_s3_endpoint)
    boto3.client("s3").create_bucket(Bucket="masks")
    summary = import_masks(tile, "s3://masks/tile")
    ds = Dataset.open("s3://masks/tile")
    assert summary.root == "s3://masks/tile" and len(ds.image_ids) == 5 and ds.class_set("c.jpg") == (2,)
    assert ds.storage.exists(MAPPING_FILE)
    last = tile / "MT_Spot/Imgs/c.jpg"  # written last; its header still reads, so it fails after four uploads
    last.write_bytes(last.read_bytes()[:-100])
    with pytest.raises(ImageDecodeError, match="truncated"):
        import_masks(tile, "s3://masks/broken")
    assert len(open_storage("s3://masks/broken").list_files(IMAGES_DIR)) == 4
    with pytest.raises(DatasetError, match="no train.csv"):
        Dataset.open("s3://masks/broken")
