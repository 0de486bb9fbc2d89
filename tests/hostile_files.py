"""Crafted hostile image files (issue 17), built in the tests from a few bytes: never stored, never downloaded."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np

from steelqc.data.images import encode_jpeg, encode_png


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(height: int, width: int, idat: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale, no interlace
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def png_header_claiming(height: int, width: int) -> bytes:
    """A valid PNG header claiming ``height × width`` with (almost) no pixel data: well under 100 bytes."""
    return _png(height, width, zlib.compress(b"\x00" * 16))


def deflate_bomb_png(height: int, width: int, rows_per_block: int = 100) -> bytes:
    """A complete, valid all-black PNG: 30000×30000 (900 MP) in under 1 MB, built in about a second.

    After a full flush deflate starts afresh, so a block of black rows compresses to the same bytes
    every time: two blocks are compressed and the second repeated; the checksum covers every row.
    """
    assert height % rows_per_block == 0
    block = bytes((width + 1) * rows_per_block)  # per row: filter byte 0, then black pixels
    compressor = zlib.compressobj(9)
    first = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    repeated = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    final_block = compressor.flush()[:-4]  # without the checksum of the two blocks actually compressed
    checksum = 1
    for _ in range(height // rows_per_block):
        checksum = zlib.adler32(block, checksum)
    idat = first + repeated * (height // rows_per_block - 1) + final_block + struct.pack(">I", checksum)
    return _png(height, width, idat)


def jpeg_with_corrupt_entropy(pixels: np.ndarray, *, n_bytes: int = 2000, seed: int = 0) -> bytes:
    """A JPEG of ``pixels`` with ``n_bytes`` random bytes written over the middle of its entropy-coded
    data; headers and the end marker are intact, so only the decoder's warning tells."""
    data = bytearray(encode_jpeg(pixels))
    start = len(data) // 2 - n_bytes // 2
    data[start : start + n_bytes] = np.random.default_rng(seed).integers(0, 256, n_bytes, dtype=np.uint8).tobytes()
    return bytes(data)


def bit_depth_and_channel_copies(grey: np.ndarray) -> dict[str, bytes]:
    """Lossless copies of one 8-bit grey strip: 8/16-bit × grey/RGB/RGBA PNGs and a 16-bit TIFF.

    16-bit samples are ``v × 257`` (the exact 8→16-bit scaling), RGB has R=G=B and alpha varies, so every
    copy shows the same picture; its brightest pixel is below white, which a stretch to it would change.
    """
    assert grey.dtype == np.uint8 and grey.max() < 255
    alpha = np.random.default_rng(1).integers(0, 256, grey.shape, dtype=np.uint8)
    layouts = {
        "grey": grey,
        "rgb": cv2.merge([grey, grey, grey]),
        "rgba": cv2.merge([grey, grey, grey, alpha]),
    }
    copies: dict[str, bytes] = {}
    for layout, array in layouts.items():
        copies[f"{layout}-8bit.png"] = encode_png(array)
        copies[f"{layout}-16bit.png"] = cv2.imencode(".png", array.astype(np.uint16) * 257)[1].tobytes()
    copies["grey-16bit.tiff"] = cv2.imencode(".tiff", grey.astype(np.uint16) * 257)[1].tobytes()
    return copies
