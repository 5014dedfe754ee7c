"""Export video: read a session's frames in decode order, write constant-rate files, image stats."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from capture.errors import BadInputError
from capture.export import layout

_MB = 1024 * 1024


def probe_video(path: Path) -> tuple[int, int]:
    """(width, height) of a session video, after checking its first frame decodes."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise BadInputError("has no video stream", path)
            for frame in container.decode(video=0):
                return frame.width, frame.height
    except (av.error.FFmpegError, ValueError) as exc:
        raise BadInputError(f"video cannot be decoded ({exc})", path) from None
    raise BadInputError("video has no decodable frames", path)


class SourceFrames:
    """A session video decoded front to back once; frames are fetched by file position."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._container = av.open(str(path))
            stream = self._container.streams.video[0]
        except (av.error.FFmpegError, IndexError) as exc:
            raise BadInputError(f"video cannot be opened ({exc})", path) from None
        stream.thread_type = "AUTO"
        self._frames = self._container.decode(stream)
        self._position = -1
        self._current: av.VideoFrame | None = None

    def at(self, position: int) -> av.VideoFrame:
        """The frame at `position`; positions must not go backwards (nothing is re-read)."""
        if position < self._position:
            raise ValueError(f"asked for frame {position} after frame {self._position}")
        try:
            while self._position < position:
                self._current = next(self._frames)
                self._position += 1
        except StopIteration:
            raise BadInputError(f"video ends after {self._position + 1} decodable frames; "
                                f"the frame timeline needs frame {position}", self.path) from None
        except av.error.FFmpegError as exc:
            raise BadInputError(f"video cannot be decoded at frame {self._position + 1} ({exc})",
                                self.path) from None
        assert self._current is not None
        return self._current

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> SourceFrames:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def resized(frame: av.VideoFrame, size: tuple[int, int] | None) -> av.VideoFrame:
    """The frame at `size` (width, height), resized with OpenCV's INTER_AREA; as is if None."""
    if size is None or (frame.width, frame.height) == size:
        return frame
    rgb = frame.to_ndarray(format="rgb24")
    small = np.ascontiguousarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA),
                                 dtype=np.uint8)
    return av.VideoFrame.from_ndarray(small, format="rgb24")


class VideoFileWriter:
    """Writes videos/<key>/chunk-*/file-*.mp4: H.264 at constant rate, pts = frame number.

    A new file starts at an episode boundary once the current one reaches the size limit, so a
    file may exceed the limit by at most one episode.
    """

    def __init__(self, root: Path, *, fps: int, width: int, height: int,
                 limits: layout.FileLimits) -> None:
        self.root, self.fps, self.width, self.height, self.limits = root, fps, width, height, limits
        self.chunk_index, self.file_index = 0, 0
        self.frames_in_file = 0
        self.bytes_in_file = 0
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None

    def path(self, chunk_index: int, file_index: int) -> Path:
        return self.root / layout.VIDEO_PATH.format(video_key=layout.VIDEO_KEY,
                                                    chunk_index=chunk_index, file_index=file_index)

    def start_episode(self) -> tuple[int, int, int]:
        """(chunk_index, file_index, first frame number in that file) for the next episode."""
        if self._container is not None and self.bytes_in_file >= self.limits.video_mb * _MB:
            self._close_file()
            self.chunk_index, self.file_index = layout.next_file(
                self.chunk_index, self.file_index, self.limits.chunks_size)
        if self._container is None:
            self._open_file()
        return self.chunk_index, self.file_index, self.frames_in_file

    def _open_file(self) -> None:
        path = self.path(self.chunk_index, self.file_index)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(path), "w", format="mp4")
        stream = self._container.add_stream(layout.VIDEO_CODEC, rate=self.fps)
        assert isinstance(stream, av.video.stream.VideoStream)
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, layout.VIDEO_PIX_FMT
        stream.codec_context.time_base = Fraction(1, self.fps)
        stream.codec_context.gop_size = layout.GOP_SECONDS * self.fps  # a keyframe every 2 s
        stream.codec_context.options = {"preset": layout.VIDEO_PRESET, "crf": str(layout.VIDEO_CRF)}
        self._stream = stream
        self.frames_in_file = 0
        self.bytes_in_file = 0

    def write(self, frame: av.VideoFrame) -> None:
        assert self._container is not None and self._stream is not None, "start_episode first"
        if frame.format.name != layout.VIDEO_PIX_FMT:
            frame = frame.reformat(format=layout.VIDEO_PIX_FMT)
        frame.pts = self.frames_in_file
        frame.time_base = Fraction(1, self.fps)
        # A decoded frame keeps its I/P type, and libx264 would force a keyframe for every I.
        frame.pict_type = av.video.frame.PictureType.NONE
        self._mux(self._stream.encode(frame))
        self.frames_in_file += 1

    def _mux(self, packets: list[Any]) -> None:
        assert self._container is not None
        for packet in packets:
            self.bytes_in_file += packet.size
            self._container.mux(packet)

    def _close_file(self) -> None:
        if self._container is None or self._stream is None:
            return
        self._mux(self._stream.encode(None))
        self._container.close()
        self._container, self._stream = None, None

    def close(self) -> None:
        self._close_file()


class ImageStats:
    """Per-channel min/max/mean/std of sampled frames in [0, 1], shaped [3, 1, 1] like LeRobot."""

    def __init__(self) -> None:
        self.images = 0
        self._pixels = 0
        self._sum = np.zeros(3)
        self._sum_sq = np.zeros(3)
        self._min = np.full(3, np.inf)
        self._max = np.full(3, -np.inf)

    @staticmethod
    def sample_positions(total_frames: int) -> set[int]:
        """Which dataset rows to sample: LeRobot's count, n**0.75 clipped to [min(n, 100),
        10000], spread evenly over the whole dataset (LeRobot samples per episode)."""
        if total_frames == 0:
            return set()
        count = max(min(total_frames, 100), min(int(total_frames ** 0.75), 10_000))
        return set(np.round(np.linspace(0, total_frames - 1, count)).astype(int).tolist())

    def add(self, frame: av.VideoFrame) -> None:
        rgb = frame.to_ndarray(format="rgb24")
        height, width = rgb.shape[:2]
        if max(width, height) >= 300:  # LeRobot downsamples large images to ~150 px for stats
            step = max(1, int(width / 150) if width > height else int(height / 150))
            rgb = rgb[::step, ::step]
        values = rgb.reshape(-1, 3).astype(np.float64) / 255.0
        self.images += 1
        self._pixels += len(values)
        self._sum += values.sum(axis=0)
        self._sum_sq += (values ** 2).sum(axis=0)
        self._min = np.minimum(self._min, values.min(axis=0))
        self._max = np.maximum(self._max, values.max(axis=0))

    def result(self) -> dict[str, list[Any]]:
        if not self.images:
            zeros = [[[0.0]]] * 3
            return {"min": zeros, "max": zeros, "mean": zeros, "std": zeros, "count": [0]}
        mean = self._sum / self._pixels
        std = np.sqrt(np.maximum(self._sum_sq / self._pixels - mean ** 2, 0.0))

        def shaped(v: np.ndarray) -> list[Any]:
            return [[[float(c)]] for c in v]

        return {"min": shaped(self._min), "max": shaped(self._max), "mean": shaped(mean),
                "std": shaped(std), "count": [self.images]}


def iter_video_times(path: Path) -> Iterator[tuple[float, int, int]]:
    """(time in s, width, height) of every decoded frame of a dataset video, in decode order."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if frame.pts is None or frame.time_base is None:
                raise BadInputError("a video frame has no timestamp", path)
            yield float(frame.pts * frame.time_base), frame.width, frame.height
