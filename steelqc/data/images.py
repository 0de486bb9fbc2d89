"""Decode images by their content, never their extension (real Severstal copies hold PNG data as .jpg).

Every loader returns a 2-D ``uint8`` grayscale array: steel strip images are grey, and 3-channel files
(R=G=B in Severstal) are converted, so one array layout flows through patches, training and inference.

Hostile files fail as one typed error each, never as a crash or a silent wrong picture: the dimensions
are read from the header and checked against a pixel budget before decoding (a 900 KB PNG can claim
30000x30000); JPEGs are decoded by libjpeg-turbo with its warnings as errors (corrupt entropy data
otherwise decodes to wrong pixels, reported on stderr only); 16-bit samples are scaled by bit depth.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import simplejpeg
from PIL import BmpImagePlugin, ImageFile, PngImagePlugin, TiffImagePlugin

from steelqc.config import DataSettings
from steelqc.data.errors import ImageDecodeError, ImageSizeError, ImageTooLargeError

DEFAULT_MAX_IMAGE_PIXELS: int = DataSettings.model_fields["max_image_pixels"].default

# Magic numbers of the formats we accept; anything else is rejected before OpenCV guesses.
_SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "jpeg": (b"\xff\xd8\xff",),
    "png": (b"\x89PNG\r\n\x1a\n",),
    "bmp": (b"BM",),
    "tiff": (b"II*\x00", b"MM\x00*"),
}
# Pillow's reader of each format parses only the header on construction. Image.open would add Pillow's
# own process-wide bomb limit (~179 MP), which would silently cap data.max_image_pixels.
_HEADER_READERS: dict[str, Callable[[io.BytesIO], ImageFile.ImageFile]] = {
    "png": PngImagePlugin.PngImageFile,
    "bmp": BmpImagePlugin.BmpImageFile,
    "tiff": TiffImagePlugin.TiffImageFile,
}


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image with what validation needs to know about the file it came from."""

    pixels: np.ndarray  # (H, W) uint8 grayscale
    format: str
    channels: int


def sniff_format(data: bytes) -> str | None:
    """The image format named by the leading bytes, or None when they match no supported format."""
    for name, signatures in _SIGNATURES.items():
        if any(data.startswith(sig) for sig in signatures):
            return name
    return None


def _is_truncated(data: bytes, fmt: str) -> bool:
    # OpenCV happily decodes a JPEG cut short (grey fill, a warning on stderr); check the end markers.
    if fmt == "jpeg":
        return not data.rstrip(b"\x00").endswith(b"\xff\xd9")
    if fmt == "png":
        return b"IEND" not in data[-16:]
    return False


def _dimensions(data: bytes, fmt: str) -> tuple[int, int]:
    """``(height, width)`` from the header alone; a JPEG's from the same library that decodes it."""
    if fmt == "jpeg":
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        return height, width
    with _HEADER_READERS[fmt](io.BytesIO(data)) as header:
        return header.height, header.width


def _decode_jpeg(data: bytes) -> np.ndarray:
    """Grey ``(H, W)`` or BGR ``(H, W, 3)`` pixels, as OpenCV would return them (same libjpeg-turbo, same
    pixels), but ``strict``: a libjpeg warning ("Corrupt JPEG data") raises instead of decoding wrong pixels."""
    if simplejpeg.decode_jpeg_header(data)[2] == "Gray":
        return simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True)[:, :, 0]
    return simplejpeg.decode_jpeg(data, colorspace="BGR", strict=True)


def _to_8_bit(raw: np.ndarray, name: str) -> np.ndarray:
    """8-bit samples by bit depth (16-bit ÷ 257, rounded), never by the image's own range: stretching to
    the brightest pixel made the same strip FAIL as 16-bit and HOLD as 8-bit."""
    if raw.dtype == np.uint8:
        return raw
    if raw.dtype == np.uint16:
        return cv2.convertScaleAbs(raw, alpha=1 / 257)
    raise ImageDecodeError(f"{raw.dtype} samples are not supported (8- or 16-bit integers only)", file=name)


def _decode_raw(data: bytes, name: str, max_pixels: int) -> tuple[np.ndarray, str]:
    """The file's pixels as stored (any depth and channel count) and its format, after the content checks.

    An image whose header claims more than ``max_pixels`` pixels raises :class:`ImageTooLargeError`
    before anything is decoded.
    """
    if not data:
        raise ImageDecodeError("empty file", file=name)
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageDecodeError("not a JPEG/PNG/BMP/TIFF image (unknown leading bytes)", file=name)
    if _is_truncated(data, fmt):
        raise ImageDecodeError(f"truncated {fmt.upper()} data (end marker missing)", file=name)
    try:
        height, width = _dimensions(data, fmt)
        if height * width > max_pixels:
            raise ImageTooLargeError(
                f"image is {height}x{width} ({height * width / 1e6:.1f} MP), over the pixel budget of "
                f"{max_pixels / 1e6:g} MP (data.max_image_pixels): refused before decoding",
                file=name,
            )
        raw = _decode_jpeg(data) if fmt == "jpeg" else cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # OpenCV's own limits, e.g. CV_IO_MAX_IMAGE_PIXELS with a budget above it
        raise ImageDecodeError(f"{fmt.upper()} data could not be decoded: {exc.err}", file=name) from None
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's header readers; libjpeg-turbo raises ValueError
        raise ImageDecodeError(f"{fmt.upper()} data could not be decoded: {exc}", file=name) from None
    if raw is None or raw.size == 0:
        raise ImageDecodeError(f"{fmt.upper()} data could not be decoded", file=name)
    return raw, fmt


def decode_image_bytes(
    data: bytes, *, name: str = "<bytes>", max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> DecodedImage:
    """Decode image bytes to grayscale; raise :class:`ImageDecodeError` naming ``name`` on any problem
    (:class:`ImageTooLargeError` before decoding when the header claims more than ``max_pixels``)."""
    raw, fmt = _decode_raw(data, name, max_pixels)
    raw = _to_8_bit(raw, name)
    if raw.ndim == 2:
        return DecodedImage(raw, fmt, 1)
    channels = raw.shape[2]
    if channels == 1:
        return DecodedImage(raw[:, :, 0], fmt, 1)
    if channels == 3:
        return DecodedImage(cv2.cvtColor(raw, cv2.COLOR_BGR2GRAY), fmt, 3)
    if channels == 4:
        return DecodedImage(cv2.cvtColor(raw, cv2.COLOR_BGRA2GRAY), fmt, 4)
    raise ImageDecodeError(f"unsupported channel count {channels}", file=name)


def decode_mask_bytes(data: bytes, *, name: str = "<bytes>", max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """A mask image as a boolean (H, W) array: True where any colour channel is non-zero.

    Not via grey: a dark colour (blue 1) rounds to grey 0 and would vanish. Alpha is ignored, since
    annotation tools write both transparent and opaque black backgrounds.
    """
    raw, _ = _decode_raw(data, name, max_pixels)
    if raw.ndim == 2:
        return raw != 0
    if raw.shape[2] not in (1, 3, 4):
        raise ImageDecodeError(f"unsupported channel count {raw.shape[2]}", file=name)
    return (raw[:, :, :3] != 0).any(axis=2)


def read_image_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` from a file's header, without decoding its pixels (~20x faster than decoding):
    importers plan the output size before they decode anything."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"cannot read: {exc.strerror or exc}", file=str(path)) from None
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageDecodeError("not a readable image (unknown leading bytes)", file=str(path))
    try:
        return _dimensions(data, fmt)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"{fmt.upper()} header could not be read: {exc}", file=str(path)) from None


def read_image(source: str | Path | bytes, *, name: str | None = None) -> np.ndarray:
    """Grayscale ``uint8`` pixels of a local file or of raw bytes."""
    if isinstance(source, bytes):
        return decode_image_bytes(source, name=name or "<bytes>").pixels
    path = Path(source)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageDecodeError("file not found", file=str(path)) from None
    return decode_image_bytes(data, name=name or str(path)).pixels


def pixel_digest(pixels: np.ndarray) -> str:
    """sha1 of the decoded pixels (and their shape): the same picture gives the same digest however it
    was encoded, so duplicates stored as different files are still found."""
    contiguous = np.ascontiguousarray(pixels)
    digest = hashlib.sha1(f"{contiguous.shape}".encode())
    digest.update(contiguous.data)
    return digest.hexdigest()


def check_size(pixels: np.ndarray, height: int, width: int, *, name: str) -> np.ndarray:
    """Return ``pixels`` unchanged if they are height × width, else raise :class:`ImageSizeError`."""
    if pixels.shape[:2] != (height, width):
        raise ImageSizeError(
            f"image is {pixels.shape[0]}x{pixels.shape[1]}, expected {height}x{width}", file=name
        )
    return pixels


def encode_png(pixels: np.ndarray) -> bytes:
    """Lossless PNG bytes (used for generated data and overlays)."""
    ok, buffer = cv2.imencode(".png", pixels)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buffer.tobytes()


def encode_jpeg(pixels: np.ndarray, quality: int = 95) -> bytes:
    """JPEG bytes, as the real Severstal files are."""
    ok, buffer = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buffer.tobytes()
