"""Hostile image files (issue 17) at the decoder and the places images enter: each is one typed error.

Validation, batch inspection and the pyfunc get their own tests beside their other bad-input tests
(tests/data/test_validation.py, tests/model/test_batch_inspection.py, tests/model/test_inference.py).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hostile_files import jpeg_with_corrupt_entropy

from steelqc.data.errors import ImageDecodeError
from steelqc.data.images import decode_image_bytes, encode_jpeg
from steelqc.data.synth import generate_strip


def _strip(seed: int = 0) -> np.ndarray:
    return generate_strip(np.random.default_rng(seed))[0]


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
