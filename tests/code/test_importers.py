"""Pascal VOC import on a NEU-DET subset: boxes become masks, class names kept, bad input named."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from steelqc.data.dataset import Dataset
from steelqc.data.errors import DatasetError, ImageDecodeError, LabelFormatError, MissingImageError
from steelqc.data.import_common import IMAGE_ID_PATTERN
from steelqc.data.importers import import_voc

NEU_CLASSES = {1: "crazing", 2: "inclusion", 3: "patches", 4: "pitted_surface", 5: "rolled-in_scale", 6: "scratches"}
# patches_104.xml names its image without the extension ("patches_104"): the importer matches by stem.
SUBSET = ["crazing_1", "inclusion_10", "patches_104", "pitted_surface_10", "rolled-in_scale_1", "scratches_10"]


@pytest.fixture
def voc_subset(neu_det: Path, tmp_path: Path) -> Path:
    src = tmp_path / "voc"
    (src / "images").mkdir(parents=True)
    (src / "annotations").mkdir()
    for stem in SUBSET:
        shutil.copy(neu_det / "images" / f"{stem}.jpg", src / "images")
        shutil.copy(neu_det / "annotations" / f"{stem}.xml", src / "annotations")
    return src


def test_neu_det_subset_imports_as_a_dataset(voc_subset: Path, tmp_path: Path) -> None:
    summary = import_voc(voc_subset, tmp_path / "out")
    ds = Dataset.open(str(tmp_path / "out"))
    assert summary.images == 6 and summary.classes == NEU_CLASSES
    assert ds.meta.classes == NEU_CLASSES and (ds.meta.height, ds.meta.width) == (200, 200)
    assert ds.meta.image_id_pattern == IMAGE_ID_PATTERN
    assert ds.image_ids == tuple(sorted(f"{s}.jpg" for s in SUBSET))
    assert ds.class_set("crazing_1.jpg") == (1,)
    # crazing_1.xml: one box (2,2)-(193,194), VOC coordinates 1-based and inclusive
    masks = ds.masks("crazing_1.jpg")
    assert masks.shape == (6, 200, 200)
    assert masks[0].sum() == 192 * 193
    assert masks[0][1:194, 1:193].all()
    assert ds.load_image("patches_104.jpg").shape == (200, 200)
    assert (voc_subset / "images" / "crazing_1.jpg").read_bytes() == ds.image_bytes("crazing_1.jpg")
    assert summary.boxes >= len(ds.labels) == sum(summary.masks_per_class.values())


def test_resize_scales_boxes(voc_subset: Path, tmp_path: Path) -> None:
    import_voc(voc_subset, tmp_path / "out", image_size=(100, 120))
    ds = Dataset.open(str(tmp_path / "out"))
    assert (ds.meta.height, ds.meta.width) == (100, 120)
    assert ds.load_image("crazing_1.jpg").shape == (100, 120)
    assert abs(int(ds.masks("crazing_1.jpg")[0].sum()) - round(192 * 193 * 0.3)) < 300


def test_bad_xml_names_the_file(voc_subset: Path, tmp_path: Path) -> None:
    (voc_subset / "annotations" / "crazing_1.xml").write_text("<annotation><object>")
    with pytest.raises(LabelFormatError, match="not valid XML") as info:
        import_voc(voc_subset, tmp_path / "out")
    assert info.value.file.endswith("crazing_1.xml")  # type: ignore[union-attr]


def test_missing_image_names_the_annotation(voc_subset: Path, tmp_path: Path) -> None:
    (voc_subset / "images" / "scratches_10.jpg").unlink()
    with pytest.raises(MissingImageError, match="scratches_10") as info:
        import_voc(voc_subset, tmp_path / "out")
    assert info.value.file.endswith("scratches_10.xml")  # type: ignore[union-attr]


def test_image_without_annotation_is_not_skipped(voc_subset: Path, tmp_path: Path) -> None:
    (voc_subset / "annotations" / "inclusion_10.xml").unlink()
    with pytest.raises(LabelFormatError, match="no annotation") as info:
        import_voc(voc_subset, tmp_path / "out")
    assert info.value.file.endswith("inclusion_10.jpg")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("<xmax>193</xmax>", "<xmax>201</xmax>"),
        ("<xmin>2</xmin>", "<xmin>0</xmin>"),
        ("<ymax>194</ymax>", "<ymax>1</ymax>"),
    ],
)
def test_box_outside_the_image_names_the_file(voc_subset: Path, tmp_path: Path, old: str, new: str) -> None:
    xml = voc_subset / "annotations" / "crazing_1.xml"
    xml.write_text(xml.read_text().replace(old, new))
    with pytest.raises(LabelFormatError, match="outside the 200x200 image") as info:
        import_voc(voc_subset, tmp_path / "out")
    assert info.value.file == str(xml)


def test_non_numeric_box_and_truncated_image(voc_subset: Path, tmp_path: Path) -> None:
    xml = voc_subset / "annotations" / "crazing_1.xml"
    original = xml.read_text()
    xml.write_text(original.replace("<xmin>2</xmin>", "<xmin>two</xmin>"))
    with pytest.raises(LabelFormatError, match="non-numeric"):
        import_voc(voc_subset, tmp_path / "out")
    xml.write_text(original)
    image = voc_subset / "images" / "scratches_10.jpg"  # last in order: the others were already checked
    image.write_bytes(image.read_bytes()[:500])
    with pytest.raises(ImageDecodeError, match="truncated") as info:
        import_voc(voc_subset, tmp_path / "out2")
    assert info.value.file == str(image)
    assert not (tmp_path / "out2").exists()  # checked before anything is written


def test_resize_never_drops_a_thin_box(voc_subset: Path, tmp_path: Path) -> None:
    # a one-pixel box at (2,2): a nearest-neighbour mask resize to 50x50 samples only every 4th pixel
    xml = voc_subset / "annotations" / "crazing_1.xml"
    text = xml.read_text()
    for old, new in [("<xmax>193</xmax>", "<xmax>2</xmax>"), ("<ymax>194</ymax>", "<ymax>2</ymax>")]:
        text = text.replace(old, new)
    xml.write_text(text)
    import_voc(voc_subset, tmp_path / "out", image_size=(50, 50))
    ds = Dataset.open(str(tmp_path / "out"))
    assert ds.class_set("crazing_1.jpg") == (1,)
    assert ds.masks("crazing_1.jpg")[0, 0, 0] and ds.masks("crazing_1.jpg")[0].sum() == 1


def test_two_images_with_one_stem_are_not_silently_merged(voc_subset: Path, tmp_path: Path) -> None:
    shutil.copy(voc_subset / "images" / "crazing_1.jpg", voc_subset / "images" / "crazing_1.png")
    with pytest.raises(DatasetError, match="two images named 'crazing_1'") as info:
        import_voc(voc_subset, tmp_path / "out")
    assert info.value.file.endswith("crazing_1.png")  # type: ignore[union-attr]
