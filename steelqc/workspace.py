"""The folders a job writes: proved writable before any work starts, and named when the disk fills up.

A read-only state folder used to surface only when the first artefact was written, minutes into a training;
a full disk raised ``[Errno 28] No space left on device`` from inside a library that knew no path.
"""

from __future__ import annotations

import errno
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class FolderNotWritableError(OSError):
    """A folder a job must write to cannot be created or written; raised before any work."""


def require_writable(folder: Path, what: str) -> None:
    """Create ``folder`` if needed and write (and remove) a probe file in it; :class:`FolderNotWritableError` if not.

    A real write, not ``os.access``: root passes every permission check but not a read-only file system.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".steelqc-write-probe-"):
            pass
    except OSError as exc:
        raise FolderNotWritableError(
            f"{what} {folder} is not writable ({exc.strerror or exc}); nothing was started. Make it writable or "
            "choose another (STEELQC_STATE_DIR, --work-dir)",
        ) from exc


@contextmanager
def disk_full_names(folder: Path, what: str) -> Iterator[None]:
    """Re-raise a full disk (``ENOSPC``) that names no file as one naming ``folder``, the place being written."""
    try:
        yield
    except OSError as exc:
        # pyarrow and h5py report a full disk as an OSError with the text only
        full = exc.errno == errno.ENOSPC or "No space left on device" in str(exc)
        if not full or exc.filename:
            raise
        raise OSError(
            errno.ENOSPC, f"no space left on the device of {what} {folder}; free space or move it elsewhere"
        ) from exc
