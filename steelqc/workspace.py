"""The folders a job writes: proved writable before any work starts, and named when the disk fills up.

A read-only state folder used to surface only when the first artefact was written, minutes into a training;
a full disk raised ``[Errno 28] No space left on device`` from inside a library that knew no path.
"""

from __future__ import annotations

import errno
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path


class FolderNotWritableError(OSError):
    """A folder a job must write to cannot be created or written; raised before any work."""


def default_work_dir(state_dir: Path) -> Path:
    """A new folder under ``<state>/runs`` for one training job."""
    return state_dir / "runs" / datetime.now(UTC).strftime("train-%Y%m%dT%H%M%S%fZ")


def require_writable(folder: Path, what: str) -> None:
    """Write (and remove) a probe file in ``folder``, or in its nearest existing parent when it is still to be made;
    :class:`FolderNotWritableError` if that fails. Creates nothing.

    A real write, not ``os.access``: root passes every permission check but not a read-only file system.
    """
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{existing} is a file")
        with tempfile.TemporaryFile(dir=existing, prefix=".steelqc-write-probe-"):
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
