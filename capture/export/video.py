"""Export video: read a session's frames in order, write constant-rate files, sample for stats."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from capture.errors import BadInputError
from capture.export import layout, stats

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
        stream.codec_context.gop_size = layout.gop_size(self.fps)  # a keyframe every 2 s
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


class EpisodeImageSampler:
    """Image statistics of one episode, from the frames LeRobot would sample (stats.py).

    Offer it every frame of the episode in order; it keeps per-channel value counts of the
    sampled ones (downsampled like LeRobot's), never the frames.
    """

    def __init__(self, frames: int) -> None:
        self.frames = frames
        self._wanted = set(stats.sample_indices(frames))
        self._position = 0
        self._counts = stats.ImageCounts()

    def offer(self, frame: av.VideoFrame) -> None:
        if self._position in self._wanted:
            self._counts.add(stats.downsample_hwc(frame.to_ndarray(format="rgb24")))
        self._position += 1

    def result(self) -> stats.Stats:
        if self._position != self.frames or self._counts.frames != len(self._wanted):
            raise RuntimeError(f"episode announced {self.frames} frames, {self._position} came")
        return self._counts.stats()


def iter_video_times(path: Path) -> Iterator[tuple[float, int, int]]:
    """(time in s, width, height) of every decoded frame of a dataset video, in decode order."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if frame.pts is None or frame.time_base is None:
                raise BadInputError("a video frame has no timestamp", path)
            yield float(frame.pts * frame.time_base), frame.width, frame.height
