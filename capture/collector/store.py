"""Where the collector keeps bytes: one small interface, a local directory or an S3 bucket."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Protocol
from urllib.parse import urlparse

from capture.errors import CaptureError

# Keys are '/'-joined parts, each a path-safe name: no '..', no leading dot, no separators.
_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


def check_key(key: str) -> str:
    """`key` if every part is a path-safe name; raises ValueError otherwise."""
    parts = key.split("/")
    if not parts or any(not _PART.match(p) or ".." in p for p in parts):
        raise ValueError(f"not a safe store key: {key!r}")
    return key


class Store(Protocol):
    """Bytes under keys. Every write replaces the whole object atomically."""

    url: str

    def put(self, key: str, data: bytes) -> None: ...

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> None: ...

    def get(self, key: str) -> bytes: ...

    def open(self, key: str) -> IO[bytes]: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[str]: ...

    def delete(self, key: str) -> None: ...

    def delete_prefix(self, prefix: str) -> int: ...


class _IterReader:
    """A read()-able file over an iterator of byte chunks (for streaming uploads)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            try:
                self._buffer += next(self._chunks)
            except StopIteration:
                break
        if size < 0:
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out


class LocalStore:
    """A directory: each key is a file below it; writes go to a temp file, then rename."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes) -> None:
        self.put_stream(key, [data])

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def open(self, key: str) -> IO[bytes]:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix.rstrip("/") if prefix else self.root
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*")
                      if p.is_file() and not p.name.startswith(".tmp-"))

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for key in keys:
            self.delete(key)
        base = self.root / check_key(prefix.rstrip("/"))
        if base.is_dir():
            shutil.rmtree(base, ignore_errors=True)
        return len(keys)


class S3Store:
    """An S3-compatible bucket (AWS, MinIO, R2, Ceph, moto) under a key prefix, through boto3."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        self._client = boto3.client(
            "s3", endpoint_url=self.endpoint_url,
            config=Config(retries={"max_attempts": 5, "mode": "standard"},
                          s3={"addressing_style": "path"}))

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> None:
        self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> None:
        # upload_fileobj switches to multipart for large objects; the object appears only
        # when the upload completes, so readers see the old object or the whole new one.
        self._client.upload_fileobj(_IterReader(chunks), self.bucket, self._key(key))

    def get(self, key: str) -> bytes:
        with self.open(key) as body:
            return body.read()

    def open(self, key: str) -> IO[bytes]:
        from botocore.exceptions import ClientError

        try:
            obj = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise KeyError(key) from None
            raise
        return obj["Body"]  # type: ignore[no-any-return]

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return False
            raise
        return True

    def list(self, prefix: str) -> list[str]:
        full = self._key(prefix.rstrip("/")) + "/" if prefix else (
            f"{self.prefix}/" if self.prefix else "")
        keys: list[str] = []
        for page in self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full):
            for item in page.get("Contents", []):
                key = item["Key"]
                keys.append(key[len(self.prefix) + 1:] if self.prefix else key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for start in range(0, len(keys), 1000):
            batch = [{"Key": self._key(k)} for k in keys[start:start + 1000]]
            self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})
        return len(keys)


def open_store(url: str | Path, *, s3_endpoint: str | None = None) -> Store:
    """The store for `url`: `s3://bucket/prefix` or a local directory (path or file:// URL)."""
    text = str(url)
    parsed = urlparse(text)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise CaptureError(f"store URL {text!r} names no bucket (s3://BUCKET/PREFIX)")
        return S3Store(parsed.netloc, parsed.path, endpoint_url=s3_endpoint)
    if parsed.scheme == "file":
        return LocalStore(Path(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:
        raise CaptureError(f"store URL {text!r}: use s3://BUCKET/PREFIX or a local directory")
    return LocalStore(Path(text))
