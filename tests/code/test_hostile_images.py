"""Hostile image files (issue 17) at the decoder and the places images enter: each is one typed error.

Validation, batch inspection and the pyfunc get their own tests beside their other bad-input tests
(tests/data/test_validation.py, tests/model/test_batch_inspection.py, tests/model/test_inference.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from steelqc.app.images import read_strip
from steelqc.config import load_settings
from steelqc.data.dataset import Dataset, DatasetMeta
from steelqc.data.errors import ImageDecodeError, ImageTooLargeError
from steelqc.data.images import decode_image_bytes, encode_jpeg
from steelqc.data.synth import generate_strip

from hostile_files import (
    bit_depth_and_channel_copies,
    deflate_bomb_png,
    jpeg_with_corrupt_entropy,
    png_header_claiming,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _strip(seed: int = 0) -> np.ndarray:
    return generate_strip(np.random.default_rng(seed))[0]


def _dataset_with(tmp_path: Path, files: dict[str, bytes], **open_kwargs: int) -> Dataset:
    (tmp_path / "train_images").mkdir()
    (tmp_path / "train.csv").write_text("ImageId,ClassId,EncodedPixels\n")
    (tmp_path / "dataset.yaml").write_text(DatasetMeta(image_id_pattern=r".*").to_yaml())
    for name, data in files.items():
        (tmp_path / "train_images" / name).write_bytes(data)
    return Dataset.open(str(tmp_path), **open_kwargs)


# 1. A PNG header claiming 60000x60000 -------------------------------------------------------------


def test_a_tiny_png_claiming_60000x60000_is_a_typed_error_whatever_the_budget() -> None:
    data = png_header_claiming(60000, 60000)
    assert len(data) < 100
    with pytest.raises(ImageTooLargeError, match="60000x60000"):
        decode_image_bytes(data, name="claims.png")
    # With a budget above OpenCV's own limit, OpenCV's cv2.error becomes the data layer's error too.
    with pytest.raises(ImageDecodeError, match="CV_IO_MAX_IMAGE_PIXELS") as caught:
        decode_image_bytes(data, name="claims.png", max_pixels=10**10)
    assert caught.value.file == "claims.png"


def test_the_app_shows_a_message_for_the_60000x60000_header() -> None:
    with pytest.raises(ImageTooLargeError, match="refused before decoding") as caught:
        read_strip(png_header_claiming(60000, 60000), name="upload.png", max_mb=20, min_height=256, min_width=256)
    assert caught.value.file == "upload.png"


# 2. Decompression bombs --------------------------------------------------------------------------


def test_a_deflate_bomb_is_a_valid_png_refused_by_its_header_everywhere(tmp_path: Path) -> None:
    small = deflate_bomb_png(2000, 3000)  # the same construction, small enough to decode: a real PNG
    np.testing.assert_array_equal(decode_image_bytes(small, max_pixels=6_000_000).pixels, np.zeros((2000, 3000)))
    with pytest.raises(ImageTooLargeError, match=r"2000x3000 \(6.0 MP\), over the pixel budget of 5 MP"):
        decode_image_bytes(small, max_pixels=5_000_000)

    bomb = deflate_bomb_png(30000, 30000)
    assert len(bomb) < 1_000_000
    with pytest.raises(ImageTooLargeError, match="30000x30000"):
        _dataset_with(tmp_path, {"bomb.png": bomb}).load_image("bomb.png")
    with pytest.raises(ImageTooLargeError):
        read_strip(bomb, name="bomb.png", max_mb=20, min_height=256, min_width=256)


def test_the_pixel_budget_is_a_setting(tmp_path: Path) -> None:
    settings = load_settings(overrides={"data.max_image_pixels": 300_000})
    assert load_settings().data.max_image_pixels == 50_000_000
    strip = encode_jpeg(_strip())  # 256x1600 = 0.41 MP
    dataset = _dataset_with(tmp_path, {"strip.jpg": strip}, max_image_pixels=settings.data.max_image_pixels)
    with pytest.raises(ImageTooLargeError, match="over the pixel budget of 0.3 MP"):
        dataset.load_image("strip.jpg")
    with pytest.raises(ImageTooLargeError):
        read_strip(strip, name="s.jpg", max_mb=20, min_height=1, min_width=1, max_pixels=settings.data.max_image_pixels)


def test_scanning_a_bomb_for_validation_stays_under_200_mb(tmp_path: Path) -> None:
    """The image scan (validation's decoding step) in a fresh process, its peak memory measured from
    just before the scan (Linux resets the peak on request), so imports do not count: before the header
    check the same bomb took 1.7 GB here (9.9 GB in `inspect --image-size any`)."""
    _dataset_with(tmp_path, {"bomb.png": deflate_bomb_png(30000, 30000), "strip.jpg": encode_jpeg(_strip())})
    script = textwrap.dedent(
        f"""
        import json, sys
        from steelqc.data.dataset import Dataset
        from steelqc.validation import scan_image_files

        def status_bytes(field):
            with open("/proc/self/status") as status:
                return 1024 * int(next(line for line in status if line.startswith(field)).split()[1])

        dataset = Dataset.open({str(tmp_path)!r})
        before = status_bytes("VmRSS:")
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # the peak (VmHWM) starts again from the current size
        records = scan_image_files(dataset, dataset.image_ids, workers=2)
        json.dump({{"growth": status_bytes("VmHWM:") - before, "records": records}}, sys.stdout)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT, check=True
    )
    outcome = json.loads(done.stdout)
    by_file = {record["file"]: record for record in outcome["records"]}
    assert "30000x30000" in by_file["bomb.png"]["decode_error"]
    assert by_file["strip.jpg"]["decode_error"] is None and by_file["strip.jpg"]["height"] == 256
    assert outcome["growth"] < 200 * 2**20, f"the scan's peak grew by {outcome['growth'] / 2**20:.0f} MB"


# 3. Corrupt JPEG entropy data --------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_a_jpeg_with_corrupt_entropy_data_fails_where_opencv_decodes_it_silently(seed: int) -> None:
    data = jpeg_with_corrupt_entropy(_strip(seed), seed=seed)
    assert data.endswith(b"\xff\xd9")
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is not None  # what passed before
    with pytest.raises(ImageDecodeError, match="JPEG data could not be decoded") as caught:
        decode_image_bytes(data, name="corrupt.jpg")
    assert caught.value.file == "corrupt.jpg"


def test_a_libjpeg_warning_is_an_error() -> None:
    """"Premature end of data segment" is only a warning to libjpeg (Pillow and OpenCV decode on)."""
    with pytest.raises(ImageDecodeError, match="Corrupt JPEG data: premature end of data segment"):
        decode_image_bytes(jpeg_with_corrupt_entropy(_strip(1), seed=1))


@pytest.mark.parametrize("colour", [False, True])
def test_strict_jpeg_decoding_gives_opencvs_pixels(colour: bool) -> None:
    """The strict decoder replaces OpenCV's for JPEGs; a sound JPEG must decode to the very same pixels,
    or every trained model would see slightly different images."""
    strip = _strip()
    image = cv2.merge([strip, cv2.add(strip, 9), strip]) if colour else strip
    data = encode_jpeg(image)
    expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE if not colour else cv2.IMREAD_COLOR)
    if colour:
        expected = cv2.cvtColor(expected, cv2.COLOR_BGR2GRAY)
    decoded = decode_image_bytes(data)
    assert decoded.channels == (3 if colour else 1)
    np.testing.assert_array_equal(decoded.pixels, expected)


# 4. Bit depth ------------------------------------------------------------------------------------


def test_8_and_16_bit_grey_rgb_and_rgba_copies_decode_to_the_same_grey_pixels() -> None:
    strip = np.minimum(_strip(), 200)  # brightest pixel below white: a stretch to it would show
    copies = bit_depth_and_channel_copies(strip)
    for name, data in copies.items():
        np.testing.assert_array_equal(decode_image_bytes(data, name=name).pixels, strip, err_msg=name)


def test_16_bit_samples_round_to_the_nearest_8_bit_value() -> None:
    samples = np.array([[0, 128, 129, 257, 385, 386, 65535]], np.uint16)
    data = cv2.imencode(".png", samples)[1].tobytes()
    assert decode_image_bytes(data).pixels.tolist() == [[0, 0, 1, 1, 1, 2, 255]]


def test_samples_that_are_not_8_or_16_bit_integers_are_refused_not_stretched() -> None:
    data = cv2.imencode(".tiff", np.full((8, 8), 0.5, np.float32))[1].tobytes()
    with pytest.raises(ImageDecodeError, match="float32 samples are not supported"):
        decode_image_bytes(data)
