"""Session thumbnails (JPEG) and short previews (WebM VP8), cached outside the session bundles."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from capture import paths
from capture.errors import BadInputError, CaptureError
from capture.session.manifest import Manifest
from capture.session.reader import file_in_session

THUMB_WIDTH = 320          # px; smaller videos keep their size
THUMB_AT = 1 / 3           # the thumbnail shows the frame a third into the session
PREVIEW_WIDTH = 320
PREVIEW_FPS = 8
PREVIEW_FRAMES = 40        # 5 s: sessions longer than that are shown sped up (frames spread out)
SEQUENTIAL_LIMIT_S = 60.0  # shorter videos are decoded in one pass; longer ones by seeking
MAX_DECODE_AFTER_SEEK = 240  # frames decoded after a seek to reach a target (bounds the CPU)

_SAFE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$")
_generate_lock = threading.Lock()  # one thumbnail/preview at a time: keeps the CPU use modest


class MediaUnavailable(CaptureError):
    """A session has no picture to show (still recording, no frames, unreadable video)."""


def default_cache_dir() -> Path:
    """$CAPTURE_HOME/cache/agent-web: derived pictures, never inside a session directory."""
    return paths.data_dir() / "cache" / "agent-web"


class MediaCache:
    """Makes and caches each session's thumbnail and preview, keyed by the video's SHA-256."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else default_cache_dir()

    def thumbnail(self, session_dir: Path, manifest: Manifest) -> Path:
        """The session's JPEG thumbnail, made on first use."""
        return self._cached(session_dir, manifest, "thumb.jpg", write_thumbnail)

    def preview(self, session_dir: Path, manifest: Manifest) -> Path:
        """The session's short low-resolution WebM (VP8) preview, made on first use."""
        return self._cached(session_dir, manifest, "preview.webm", write_preview)

    def forget(self, session_id: str) -> None:
        """Delete everything cached for a session (call when the session is deleted)."""
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.root / _dir_name(session_id))

    def prune(self, keep_ids: Iterable[str]) -> list[str]:
        """Delete the cache of every session not in keep_ids; return the names removed."""
        keep = {_dir_name(i) for i in keep_ids}
        removed = []
        if self.root.is_dir():
            for entry in self.root.iterdir():
                if entry.name not in keep:
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry.name)
        return removed

    def _cached(self, session_dir: Path, manifest: Manifest, name: str,
                make: Any) -> Path:
        video = _video_of(session_dir, manifest)
        digest = manifest.files[manifest.video.file].sha256[:16]
        target = self.root / _dir_name(session_dir.name) / f"{digest}.{name}"
        if target.exists():
            return target
        with _generate_lock:
            if target.exists():
                return target
            target.parent.mkdir(parents=True, exist_ok=True)
            for old in target.parent.glob(f"*.{name}"):  # made from an older video: stale
                old.unlink(missing_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            try:
                make(video, tmp)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
        return target


def _dir_name(session_id: str) -> str:
    if not _SAFE_ID.match(session_id):
        raise BadInputError(f"session id {session_id[:60]!r} is not a plain name")
    return session_id


def _video_of(session_dir: Path, manifest: Manifest) -> Path:
    if manifest.status == "recording":
        raise MediaUnavailable("the session is still being recorded")
    name = manifest.video.file
    if name not in manifest.files:
        raise MediaUnavailable("the session has no video file")
    if not (manifest.qa and manifest.qa.frames):
        raise MediaUnavailable("nothing was captured in this session (the game never had focus)")
    try:
        video = file_in_session(session_dir, name)
    except BadInputError as exc:
        raise MediaUnavailable(exc.problem) from None
    except (OSError, RuntimeError, ValueError):  # a link loop, a NUL byte in the name
        raise MediaUnavailable(f"the session's video {name[:80]!r} cannot be found") from None
    if not video.is_file():
        raise MediaUnavailable("the session's video file is missing")
    return video


# --- making pictures --------------------------------------------------------------------------
def write_thumbnail(video: Path, out: Path) -> None:
    """Write a JPEG of the frame a third into `video`, at most THUMB_WIDTH wide."""
    duration = video_duration_s(video)
    (image,) = frames_at(video, [duration * THUMB_AT], THUMB_WIDTH)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise MediaUnavailable("the thumbnail could not be encoded as JPEG")
    out.write_bytes(data.tobytes())


def write_preview(video: Path, out: Path) -> None:
    """Write a short WebM (VP8) of `video`: real speed if short, else frames spread over it."""
    duration = video_duration_s(video)
    count = max(1, min(PREVIEW_FRAMES, int(duration * PREVIEW_FPS)))
    step = duration / count
    images = frames_at(video, [i * step for i in range(count)], PREVIEW_WIDTH)
    height, width = images[0].shape[:2]
    with av.open(str(out), "w", format="webm") as container:
        stream = container.add_stream("libvpx", rate=PREVIEW_FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = 600_000
        stream.codec_context.thread_count = 1
        stream.codec_context.options = {"deadline": "good", "cpu-used": "4"}
        for i, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, PREVIEW_FPS)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def video_duration_s(video: Path) -> float:
    """Seconds from the first to the last frame's timestamp (0.0 for a one-frame video)."""
    with _open(video) as container:
        stream = container.streams.video[0]
        if container.duration:
            return max(0.0, float(container.duration) / 1_000_000 - _start_s(stream))
        last = 0.0
        for packet in container.demux(stream):
            if packet.pts is not None and packet.time_base is not None:
                last = max(last, float(packet.pts * packet.time_base))
        return max(0.0, last - _start_s(stream))


def frames_at(video: Path, times_s: list[float], width: int, *,
              sequential_limit_s: float = SEQUENTIAL_LIMIT_S) -> list[np.ndarray]:
    """RGB frames shown at each of `times_s` (seconds from the first frame), scaled to `width`.

    Short videos are decoded in one pass; longer ones by seeking to the keyframe before each
    time, so a preview of an hour-long session decodes only a few hundred frames.
    """
    with _open(video) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        size = _scaled(stream.codec_context.width, stream.codec_context.height, width)
        start = _start_s(stream)
        targets = [start + t for t in times_s]
        if not targets:
            return []
        try:
            if max(times_s) <= sequential_limit_s:
                picked = _one_pass(container, stream, targets)
            else:
                picked = [_after_seek(container, stream, t) for t in targets]
        except av.error.FFmpegError as exc:
            raise MediaUnavailable(f"the session's video cannot be decoded ({exc})") from None
        if any(f is None for f in picked):
            raise MediaUnavailable("the session's video has no decodable frame")
        return [f.to_ndarray(format="rgb24", width=size[0], height=size[1])
                for f in picked if f is not None]


def _one_pass(container: Any, stream: Any, targets: list[float]) -> list[Any]:
    picked: list[Any] = [None] * len(targets)
    order = sorted(range(len(targets)), key=lambda i: targets[i])
    position, last = 0, None
    for frame in container.decode(stream):
        last = frame
        while position < len(order) and frame.time is not None \
                and frame.time >= targets[order[position]] - 1e-6:
            picked[order[position]] = frame
            position += 1
        if position == len(order):
            break
    return [f if f is not None else last for f in picked]


def _after_seek(container: Any, stream: Any, target: float) -> Any:
    container.seek(int(target / stream.time_base), stream=stream, backward=True, any_frame=False)
    frame = None
    for count, decoded in enumerate(container.decode(stream)):
        frame = decoded
        if decoded.time is None or decoded.time >= target - 1e-6 \
                or count >= MAX_DECODE_AFTER_SEEK:
            break
    return frame


def _scaled(src_w: int, src_h: int, width: int) -> tuple[int, int]:
    if src_w <= 0 or src_h <= 0:
        raise MediaUnavailable("the session's video has no picture size")
    w = min(width, src_w) // 2 * 2 or 2
    h = max(2, round(src_h * w / src_w) // 2 * 2)
    return w, h


def _start_s(stream: Any) -> float:
    if stream.start_time is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _open(video: Path) -> Any:
    try:
        return av.open(str(video))
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaUnavailable(f"the session's video cannot be opened ({exc})") from None
