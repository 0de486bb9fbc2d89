"""Read and write files under a dataset root that is a local folder or ``s3://bucket/prefix``.

S3 goes through boto3, so the standard ``AWS_*`` variables (keys, region, profile, ``AWS_ENDPOINT_URL``)
apply as usual; an explicit endpoint URL points it at any S3-compatible store (MinIO, moto).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from botocore.exceptions import ClientError, NoCredentialsError

from steelqc.data.errors import DatasetError, MissingImageError, PathEscapeError


class Storage(Protocol):
    """Files addressed by '/'-separated paths relative to one root."""

    uri: str

    def read_bytes(self, relpath: str) -> bytes: ...

    def write_bytes(self, relpath: str, data: bytes) -> None: ...

    def exists(self, relpath: str) -> bool: ...

    def is_folder(self, relpath: str) -> bool:
        """True when ``relpath`` is a folder (an S3 prefix holding objects), where a file was expected."""
        ...

    def list_files(self, reldir: str) -> list[str]:
        """Names (not paths) of the files directly inside ``reldir``, sorted."""
        ...


class LocalStorage:
    """A folder on disk. Symlinks are followed only to targets inside the (resolved) root: a link out of
    it, to a folder or a file, raises :class:`PathEscapeError` saying so, instead of reading what a
    dataset author pointed at (``/etc/passwd``) or looking empty. The root itself may be a symlink."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _path(self, relpath: str) -> Path:
        path = (self.root / relpath).resolve()
        if self.root != path and self.root not in path.parents:
            raise PathEscapeError(
                f"path {relpath!r} resolves to {path}, outside the root {self.root} (symlinks must point inside it)",
                file=relpath,
            )
        return path

    def read_bytes(self, relpath: str) -> bytes:
        path = self._path(relpath)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise MissingImageError("file not found", file=str(path)) from None

    def write_bytes(self, relpath: str, data: bytes) -> None:
        path = self._path(relpath)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def exists(self, relpath: str) -> bool:
        return self._path(relpath).is_file()

    def is_folder(self, relpath: str) -> bool:
        return self._path(relpath).is_dir()

    def list_files(self, reldir: str) -> list[str]:
        folder = self._path(reldir)
        if not folder.is_dir():
            if (self.root / reldir).is_symlink():
                raise DatasetError(f"{reldir!r} is a symlink to {folder}, which is not a folder", file=self.uri)
            return []
        return sorted(entry.name for entry in os.scandir(folder) if entry.is_file())


S3_ACCESS_CODES = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}


def _s3_refusal(exc: Exception, location: str) -> DatasetError:
    """One line for an S3 error that is neither "not found" nor transient: who refused, and what to check."""
    error = getattr(exc, "response", {}).get("Error", {})
    code, message = error.get("Code", type(exc).__name__), error.get("Message", str(exc))
    hint = " (check AWS credentials and the bucket policy)" if code in S3_ACCESS_CODES else ""
    return DatasetError(f"S3 refused the request: {code}: {message}{hint}", file=location)


class S3Storage:
    """A prefix in an S3 (or S3-compatible) bucket."""

    def __init__(self, uri: str, endpoint_url: str | None = None) -> None:
        import boto3
        from botocore.config import Config

        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise DatasetError(f"not an s3:// URI: {uri!r}")
        self.uri = uri.rstrip("/")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32),
        )

    def _key(self, relpath: str) -> str:
        parts = [p for p in relpath.split("/") if p]
        if any(p == ".." for p in parts):
            raise PathEscapeError(f"path {relpath!r} escapes the dataset root", file=relpath)
        return "/".join([self.prefix, *parts]) if self.prefix else "/".join(parts)

    def read_bytes(self, relpath: str) -> bytes:
        key = self._key(relpath)
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise MissingImageError("object not found", file=f"s3://{self.bucket}/{key}") from None
        except self.client.exceptions.NoSuchBucket:
            raise DatasetError(f"bucket {self.bucket!r} does not exist", file=self.uri) from None
        except (ClientError, NoCredentialsError) as exc:
            raise _s3_refusal(exc, f"s3://{self.bucket}/{key}") from None

    def write_bytes(self, relpath: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(relpath), Body=data)

    def exists(self, relpath: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(relpath))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise _s3_refusal(exc, f"s3://{self.bucket}/{self._key(relpath)}") from None

    def is_folder(self, relpath: str) -> bool:
        try:
            listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=f"{self._key(relpath)}/", MaxKeys=1)
        except (ClientError, NoCredentialsError) as exc:
            raise _s3_refusal(exc, self.uri) from None
        return bool(listed.get("KeyCount"))

    def list_files(self, reldir: str) -> list[str]:
        folder = self._key(reldir)
        prefix = f"{folder}/" if folder else ""  # the bucket's top level has no "/" prefix
        names: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                names.extend(obj["Key"][len(prefix) :] for obj in page.get("Contents", []))
        except self.client.exceptions.NoSuchBucket:
            raise DatasetError(f"bucket {self.bucket!r} does not exist", file=self.uri) from None
        except (ClientError, NoCredentialsError) as exc:
            raise _s3_refusal(exc, self.uri) from None
        return sorted(n for n in names if n)


def open_storage(root: str | Path, endpoint_url: str | None = None) -> Storage:
    """Local folder or ``s3://`` prefix: the one place steelqc picks an S3 endpoint for its data.

    ``endpoint_url`` (``data.s3_endpoint_url``) when given, else boto3's own choice (``$AWS_ENDPOINT_URL_S3``,
    ``$AWS_ENDPOINT_URL``, the AWS config file). ``$MLFLOW_S3_ENDPOINT_URL`` is MLflow's, for its artefacts.
    """
    text = str(root)
    if text.startswith("s3://"):
        return S3Storage(text, endpoint_url=endpoint_url)
    return LocalStorage(text)
