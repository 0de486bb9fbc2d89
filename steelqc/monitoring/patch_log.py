"""The production patch log: append-only, date-partitioned parquet on a local folder or S3."""

from __future__ import annotations

import io
import os
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from steelqc.data.storage import LocalStorage, S3Storage, open_storage
from steelqc.monitoring.features import MonitoringDataError

if TYPE_CHECKING:
    from steelqc.config import Settings

PARTITION_PREFIX = "date="


class PatchLog:
    """Append-only, date-partitioned parquet log of production patches (``date=YYYY-MM-DD/part-*.parquet``).

    The root is a local folder or an ``s3://bucket/prefix`` (boto3; ``endpoint_url`` or the ``AWS_*``
    variables point it at MinIO/moto). Each append is its own file, so concurrent writers never collide.
    """

    def __init__(self, root: str | Path, endpoint_url: str | None = None) -> None:
        self.storage = open_storage(root, endpoint_url=endpoint_url)
        self.uri = self.storage.uri

    def append(self, frame: pd.DataFrame, *, now: datetime | None = None) -> str | None:
        """Write ``frame`` with a ``logged_at`` column into today's partition; the file's URI (None if empty)."""
        if frame.empty:
            return None
        stamp = (now or datetime.now(UTC)).astimezone(UTC)
        rows = frame.assign(logged_at=pd.Timestamp(stamp))
        buffer = io.BytesIO()
        rows.to_parquet(buffer, index=False)
        relpath = f"{PARTITION_PREFIX}{stamp.date().isoformat()}/part-{stamp:%H%M%S}-{uuid.uuid4().hex[:12]}.parquet"
        self.storage.write_bytes(relpath, buffer.getvalue())
        return f"{self.uri}/{relpath}"

    def partitions(self) -> list[date]:
        """Dates that have a partition, oldest first."""
        names: list[str]
        if isinstance(self.storage, LocalStorage):
            root = self.storage.root
            names = [e.name for e in os.scandir(root) if e.is_dir()] if root.is_dir() else []
        elif isinstance(self.storage, S3Storage):
            names = self._s3_folders(self.storage)
        else:  # pragma: no cover - open_storage only returns the two kinds above
            raise TypeError(type(self.storage).__name__)
        dates = []
        for name in names:
            try:
                if not name.startswith(PARTITION_PREFIX):
                    raise ValueError(name)
                dates.append(date.fromisoformat(name[len(PARTITION_PREFIX) :]))
            except ValueError:
                raise MonitoringDataError(
                    "not a date partition (expected date=YYYY-MM-DD) in the patch log", file=f"{self.uri}/{name}"
                ) from None
        return sorted(dates)

    @staticmethod
    def _s3_folders(storage: S3Storage) -> list[str]:
        prefix = f"{storage.prefix}/" if storage.prefix else ""
        folders: list[str] = []
        pages = storage.client.get_paginator("list_objects_v2").paginate(
            Bucket=storage.bucket, Prefix=prefix, Delimiter="/"
        )
        try:
            for page in pages:
                folders.extend(p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", []))
        except storage.client.exceptions.NoSuchBucket:
            raise MonitoringDataError(f"bucket {storage.bucket!r} does not exist", file=storage.uri) from None
        return folders

    def read(self, since: date | None = None, until: date | None = None) -> pd.DataFrame:
        """All rows logged on days ``since``..``until`` (inclusive); an empty frame when there are none."""
        frames = []
        for day in self.partitions():
            if (since and day < since) or (until and day > until):
                continue
            folder = f"{PARTITION_PREFIX}{day.isoformat()}"
            for name in self.storage.list_files(folder):
                relpath = f"{folder}/{name}"
                if not name.endswith(".parquet"):
                    raise MonitoringDataError("not a parquet file in the patch log", file=f"{self.uri}/{relpath}")
                try:
                    frames.append(pd.read_parquet(io.BytesIO(self.storage.read_bytes(relpath))))
                except (OSError, ValueError) as exc:
                    raise MonitoringDataError(f"unreadable parquet: {exc}", file=f"{self.uri}/{relpath}") from exc
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def patch_log_of(settings: Settings) -> PatchLog:
    """The production patch log configured by ``monitoring.log_dir`` (default ``<state>/patch-log``)."""
    return PatchLog(
        settings.monitoring.log_dir or settings.state_dir / "patch-log", endpoint_url=settings.data.s3_endpoint_url
    )


def read_window(
    log: PatchLog, since: date | None, until: date | None, model_version: str | None
) -> tuple[pd.DataFrame, int]:
    """Rows logged ``since``..``until`` by ``model_version`` (all versions when None) and how many others were left out.

    Scores and embeddings of another model version are not comparable with this version's reference.
    """
    rows = log.read(since, until)
    if model_version is None or rows.empty or "model_version" not in rows.columns:
        return rows, 0
    mine = rows["model_version"].astype(str) == str(model_version)
    return rows[mine].reset_index(drop=True), int((~mine).sum())
