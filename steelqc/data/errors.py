"""Typed data errors. Each names the file and, where there is one, the CSV row, so nothing fails anonymously."""

from __future__ import annotations


class DataError(Exception):
    """Base of every bad-input error in steelqc's data layer."""

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None) -> None:
        self.reason = message
        self.file = file
        self.row = row
        where = ", ".join(
            part for part in (f"file {file}" if file else "", f"row {row}" if row is not None else "") if part
        )
        super().__init__(f"{message} ({where})" if where else message)


class RLEError(DataError):
    """EncodedPixels that do not describe a valid mask: odd count, non-integers, bad or overlapping runs."""


class LabelFormatError(DataError):
    """A labels CSV with the wrong columns, or a value that cannot be parsed."""


class UnsafeImageIdError(DataError):
    """An ImageId that could escape the images folder (``/``, ``\\``, ``..``) or is empty."""


class MissingImageError(DataError):
    """A labelled image that is not in the images folder."""


class ImageDecodeError(DataError):
    """Bytes that do not decode as an image (truncated, corrupt, not an image)."""


class ImageTooLargeError(ImageDecodeError):
    """An image whose header claims more pixels than the budget: refused before a pixel is decoded."""


class ImageSizeError(DataError):
    """An image whose height × width differs from the dataset's (or a mask whose size differs from its image's)."""


class MaskError(DataError):
    """A mask image that is missing, unpaired, or contradicts its folder (defect pixels in a clean folder)."""


class DatasetError(DataError):
    """A dataset folder that is missing, empty, or whose metadata is invalid."""


class PathEscapeError(DatasetError):
    """A path that leads out of the storage root, by '..' or by a symlink whose target lies outside it."""
