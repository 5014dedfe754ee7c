"""Export's filesystem layer: local paths and object-store URLs (s3://...) through pyarrow.fs."""

# pyarrow.fs because pyarrow is already a dependency (no new package), it streams reads and
# multipart writes in C++ without holding a file in memory, and one FileSystem API covers the local
# disk, S3-compatible stores (AWS, MinIO, R2, Ceph, moto) and GCS/HDFS. An S3 endpoint comes from
# the URL's query (`s3://bucket/prefix?endpoint_override=http://127.0.0.1:9000`) or from
# AWS_ENDPOINT_URL; credentials from the usual AWS_* variables, never from the URL.
# Codecs work on local files: inputs are copied down (streamed, block by block) before decoding,
# outputs are written locally and copied up.

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from capture.errors import CaptureError

_BLOCK = 8 * 1024 * 1024
URL_SCHEMES = ("s3://", "gs://", "gcs://", "hdfs://")


def is_url(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(URL_SCHEMES)


def resolve(url: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for an object-store URL."""
    try:
        if url.startswith("s3://"):
            parts = urlsplit(url)
            endpoint = os.environ.get("AWS_ENDPOINT_URL")
            if endpoint and "endpoint_override" not in parts.query:
                scheme = urlsplit(endpoint).scheme or "https"
                fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme=scheme,
                                       allow_bucket_creation=False)
                return fs, f"{parts.netloc}{parts.path}".rstrip("/")
        fs, path = pafs.FileSystem.from_uri(url)
    except (OSError, ValueError) as exc:
        raise CaptureError(f"cannot use storage URL {_safe(url)}: {exc}") from None
    return fs, path.rstrip("/")


def _safe(url: str) -> str:
    """The URL without its query (which may carry settings but must not reach logs)."""
    return url.split("?", 1)[0]


def join(location: str, *names: str) -> str:
    """`location/name/...` for a local path or a URL (a URL's query stays at the end)."""
    if is_url(location):
        base, _, query = location.partition("?")
        joined = "/".join([base.rstrip("/"), *names])
        return f"{joined}?{query}" if query else joined
    return str(Path(location, *names))


def exists(location: str) -> bool:
    if not is_url(location):
        return Path(location).exists()
    fs, path = resolve(location)
    return bool(fs.get_file_info(path).type != pafs.FileType.NotFound)


def local_file(location: str, dest: Path) -> Path:
    """A local path holding the file at `location`: itself if local, else a copy at `dest`."""
    if not is_url(location):
        return Path(location)
    fs, path = resolve(location)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with fs.open_input_stream(path) as src, open(dest, "wb") as out:
            while block := src.read(_BLOCK):
                out.write(block)
    except (OSError, FileNotFoundError) as exc:
        raise CaptureError(f"cannot read {_safe(location)}: {exc}") from None
    return dest


def put_file(local: Path, location: str) -> str:
    """Move a local file to `location` (a path or URL); returns the location."""
    if not is_url(location):
        target = Path(location)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(local, target)
        return str(target)
    fs, path = resolve(location)
    try:
        with open(local, "rb") as src, fs.open_output_stream(path) as out:
            while block := src.read(_BLOCK):
                out.write(block)
    except OSError as exc:
        raise CaptureError(f"cannot write {_safe(location)}: {exc}") from None
    return location


def local_dir(location: str, dest: Path) -> Path:
    """A local directory with the files under `location` (a copy in `dest` if it is a URL)."""
    if not is_url(location):
        return Path(location)
    fs, path = resolve(location)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    if not infos:
        raise CaptureError(f"nothing found at {_safe(location)}")
    for info in infos:
        if info.type == pafs.FileType.File:
            rel = info.path[len(path):].lstrip("/")
            local_file(join(location, *rel.split("/")), dest / rel)
    return dest


def upload_dir(local: Path, location: str, *, last: tuple[str, ...] = ()) -> None:
    """Copy every file under `local` to `location`; the relative paths in `last` go last (an
    object store has no rename: readers see a dataset once its info file is there)."""
    files = sorted(p for p in local.rglob("*") if p.is_file())
    rels = [p.relative_to(local).as_posix() for p in files]
    order = [r for r in rels if r not in last] + [r for r in last if r in rels]
    fs, path = resolve(location)
    for rel in order:
        with open(local / rel, "rb") as src, fs.open_output_stream(f"{path}/{rel}") as out:
            while block := src.read(_BLOCK):
                out.write(block)


def delete_dir(location: str) -> None:
    fs, path = resolve(location)
    with contextlib.suppress(OSError):
        fs.delete_dir(path)
