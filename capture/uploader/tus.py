"""A tus 1.0 client over httpx (core protocol + checksum extension) for one upload URL."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from pathlib import Path

import httpx

from .http import CollectorError, call, error_from

TUS_VERSION = "1.0.0"
DEFAULT_CHUNK = 4 << 20
MAX_CHECKSUM_RETRIES = 5


def offset(http: httpx.Client, url: str) -> int:
    """The byte the collector has confirmed up to (HEAD)."""
    response = call(http, "HEAD", url, headers={"Tus-Resumable": TUS_VERSION})
    return int(response.headers["Upload-Offset"])


def send_file(http: httpx.Client, url: str, path: Path, length: int, *,
              chunk_size: int = DEFAULT_CHUNK,
              progress: Callable[[int], None] = lambda _n: None) -> None:
    """Send `path` from the collector's confirmed offset to `length`, one checksummed chunk per
    PATCH. A chunk the collector finds damaged (460) is sent again; a network failure raises
    Unreachable and the next call resumes from the last confirmed chunk."""
    position = offset(http, url)
    retries = 0
    with open(path, "rb") as source:
        while position < length:
            source.seek(position)
            data = source.read(min(chunk_size, length - position))
            if not data:
                raise CollectorError(0, "short_file", f"{path.name} is shorter than the "
                                                      f"{length} bytes its manifest lists", {})
            checksum = base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")
            try:
                response = call(http, "PATCH", url, content=data, headers={
                    "Tus-Resumable": TUS_VERSION,
                    "Content-Type": "application/offset+octet-stream",
                    "Upload-Offset": str(position),
                    "Upload-Checksum": f"sha256 {checksum}"})
            except CollectorError as err:
                if err.status == 460 and retries < MAX_CHECKSUM_RETRIES:
                    retries += 1
                    continue  # damaged in transit: send the same chunk again
                if err.status == 409 and err.code == "offset_mismatch":
                    position = offset(http, url)
                    continue
                raise
            new_position = int(response.headers["Upload-Offset"])
            progress(new_position - position)
            position, retries = new_position, 0


__all__ = ["TUS_VERSION", "error_from", "offset", "send_file"]
