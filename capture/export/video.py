"""Export video: decode session videos, encode or copy episode segments, join them into files."""

# An episode is written as its own segment file (an mp4 holding just that episode's frames at
# pts = 0, 1, 2, ... in a 1/fps time base, starting on a keyframe) by encode_segment or
# copy_segment; VideoFileWriter then joins segments into the dataset's chunk files by stream copy,
# as LeRobot concatenates episodes. Segments are independent, so any number of workers can make
# them and the joined files are the same whoever made them. Whoever makes a segment also counts
# the pixels of its sampled frames for the episode's image statistics (sampled_pixels,
# stats.ImageCounts).

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from capture.errors import BadInputError
from capture.export import layout, stats

_MB = 1024 * 1024
# libswscale's area averaging (no aliasing when shrinking), asked to be bit-exact so that the
# same input scales to the same bytes on any machine (workers of one export may differ).
SCALE_INTERPOLATION = Interpolation.AREA | Interpolation.BITEXACT | Interpolation.ACCURATE_RND
ENCODER_THREADS = 1  # parallelism comes from workers; one thread is the least CPU per frame
# and makes libx264's output the same bytes in every worker and engine.


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What export needs to know about a session video before decoding it."""

    width: int
    height: int
    codec: str      # the stream's codec name, e.g. "h264"
    pix_fmt: str


def probe_video(path: Path) -> SourceInfo:
    """Size, codec and pixel format of a session video, after checking its first frame decodes."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise BadInputError("has no video stream", path)
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                return SourceInfo(width=frame.width, height=frame.height,
                                  codec=stream.codec_context.name, pix_fmt=frame.format.name)
    except (av.error.FFmpegError, ValueError) as exc:
        raise BadInputError(f"video cannot be decoded ({exc})", path) from None
    raise BadInputError("video has no decodable frames", path)


class SourceFrames:
    """A session video decoded front to back once; frames are fetched by file position."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._container: av.container.InputContainer | None = None
        self._frames: Iterator[av.VideoFrame] = iter(())
        self._position = -1
        self._current: av.VideoFrame | None = None

    def _open(self) -> None:
        """Opened at the first frame asked for (a job that only copies never decodes)."""
        try:
            self._container = av.open(str(self.path))
            stream = self._container.streams.video[0]
        except (av.error.FFmpegError, IndexError) as exc:
            raise BadInputError(f"video cannot be opened ({exc})", self.path) from None
        # One decoding thread: workers run in parallel, and frame threads only add CPU.
        stream.thread_type = "NONE"
        self._frames = self._container.decode(stream)

    def at(self, position: int) -> av.VideoFrame:
        """The frame at `position`; positions must not go backwards (nothing is re-read)."""
        if self._container is None:
            self._open()
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
        if self._container is not None:
            self._container.close()

    def __enter__(self) -> SourceFrames:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def scaled(frame: av.VideoFrame, size: tuple[int, int] | None,
           reformatter: VideoReformatter | None = None) -> av.VideoFrame:
    """The frame as yuv420p at `size` (width, height), scaled by libswscale in one step (no RGB
    round trip); as is when it already is. None keeps the frame's size.

    Pass one VideoReformatter for a run of frames: it keeps libswscale's context, which
    frame.reformat() builds anew for every frame (3x the CPU of the scaling itself)."""
    width, height = size if size is not None else (frame.width, frame.height)
    if (frame.width, frame.height) == (width, height) and \
            frame.format.name == layout.VIDEO_PIX_FMT:
        return frame
    return (reformatter or VideoReformatter()).reformat(
        frame, width=width, height=height, format=layout.VIDEO_PIX_FMT,
        interpolation=SCALE_INTERPOLATION)


# --- segments -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Segment:
    """One episode's video as a standalone file, and how it was made."""

    path: Path
    frames: int
    bytes: int
    copied: bool  # packets copied from the session video (no re-encode)
    signature: tuple[object, ...]  # what must match to share a file with other segments


FrameSink = Callable[[int, av.VideoFrame], None]  # (frame number in the episode, frame)


def _open_segment(path: Path, *, fps: int, width: int, height: int,
                  encoding: layout.VideoEncoding,
                  like: av.VideoFrame | None) -> tuple[av.container.OutputContainer,
                                                       av.video.stream.VideoStream]:
    container = av.open(str(path), "w", format="mp4")
    stream = container.add_stream(encoding.encoder, rate=fps)
    assert isinstance(stream, av.video.stream.VideoStream)
    stream.width, stream.height, stream.pix_fmt = width, height, layout.VIDEO_PIX_FMT
    context = stream.codec_context
    context.time_base = Fraction(1, fps)
    context.gop_size = encoding.gop
    if like is not None:  # say what the pixels are: the session's colour range and matrix
        context.color_range = like.color_range
        context.colorspace = like.colorspace
    stream.options = dict(encoding.codec_options(ENCODER_THREADS))
    context.thread_count = ENCODER_THREADS  # libavcodec's own threads too, not only x264's
    context.thread_type = "NONE"
    return container, stream


def encode_segment(path: Path, frames: Iterator[av.VideoFrame], count: int, *, fps: int,
                   width: int, height: int, encoding: layout.VideoEncoding,
                   sink: FrameSink | None = None) -> Segment:
    """Encode `count` frames (any size and format: scaled here) into a segment file.

    `sink` sees every frame as encoded (at the output size, yuv420p), e.g. for image stats.
    """
    container: av.container.OutputContainer | None = None
    stream: av.video.stream.VideoStream | None = None
    size = 0
    written = 0
    reformatter = VideoReformatter()
    try:
        for frame in frames:
            picture = scaled(frame, (width, height), reformatter)
            if container is None:
                container, stream = _open_segment(path, fps=fps, width=width, height=height,
                                                  encoding=encoding, like=frame)
            assert stream is not None
            if sink is not None:
                sink(written, picture)
            picture.pts, picture.time_base = written, Fraction(1, fps)
            # A decoded frame keeps its I/P type, and the encoder would make every I a keyframe.
            picture.pict_type = av.video.frame.PictureType.NONE
            for packet in stream.encode(picture):
                size += packet.size
                container.mux(packet)
            written += 1
        if container is None or stream is None:
            raise ValueError("an episode needs at least one frame")
        for packet in stream.encode(None):
            size += packet.size
            container.mux(packet)
    finally:
        if container is not None:
            container.close()
    if written != count:
        raise RuntimeError(f"segment {path.name}: {written} frames encoded, {count} expected")
    return Segment(path=path, frames=written, bytes=size, copied=False,
                   signature=signature(path))


def _nal_length_size(extradata: bytes) -> int:
    """Bytes of each NAL unit's length prefix (avcC's lengthSizeMinusOne + 1)."""
    if len(extradata) < 5 or extradata[0] != 1:
        raise ValueError("not an avcC H.264 stream (no length-prefixed NAL units)")
    return (extradata[4] & 3) + 1


def is_idr(data: bytes, length_size: int) -> bool:
    """True if an avcC H.264 access unit holds an IDR slice (NAL type 5): decoding can start
    there and nothing after it refers back (a plain I-frame does not promise that)."""
    at = 0
    while at + length_size <= len(data):
        size = int.from_bytes(data[at:at + length_size], "big")
        at += length_size
        if size <= 0 or at + size > len(data):
            return False
        if data[at] & 0x1F == 5:
            return True
        at += size
    return False


def copy_segment(path: Path, source: Path, first: int, count: int, *, fps: int,
                 decode: frozenset[int] = frozenset(),
                 sink: FrameSink | None = None) -> Segment:
    """Copy the packets of file positions [first, first + count) of `source` into a segment,
    rewriting only timestamps (frame i at i/fps). `first` must be an IDR frame and the source
    must store frames in presentation order (no B-frames): the caller checks (idr_positions).

    The IDR frames at the positions in `decode` are decoded on the way (each on its own, so
    nothing else is) and handed to `sink` with their frame number in the episode.
    """
    size = 0
    written = 0
    with av.open(str(source)) as src:
        in_stream = src.streams.video[0]
        in_stream.thread_type = "NONE"
        length_size = _nal_length_size(bytes(in_stream.codec_context.extradata or b""))
        decoder = in_stream.codec_context
        numbers: list[int] = []
        with av.open(str(path), "w", format="mp4") as out:
            out_stream = out.add_stream_from_template(in_stream, opaque=True)
            out_stream.time_base = Fraction(1, fps)
            position = -1
            for packet in src.demux(in_stream):
                if not packet.size:
                    continue
                position += 1
                if position < first:
                    continue
                if position >= first + count:
                    break
                if position == first and not is_idr(bytes(packet), length_size):
                    raise ValueError(f"file position {first} of {source} is not an IDR frame")
                if position in decode and sink is not None:
                    numbers.append(position - first)
                    for frame in decoder.decode(packet):
                        sink(numbers.pop(0), frame)
                packet.stream = out_stream
                packet.pts = packet.dts = written
                packet.duration = 1  # one frame (the source's is in its own time base)
                packet.time_base = Fraction(1, fps)
                size += packet.size
                out.mux(packet)
                written += 1
            if numbers and sink is not None:
                for frame in decoder.decode(None):
                    sink(numbers.pop(0), frame)
    if written != count:
        raise BadInputError(f"video ends at file position {first + written}; the episode needs "
                            f"{count} frames from position {first}", source)
    return Segment(path=path, frames=written, bytes=size, copied=True, signature=signature(path))


KEYFRAME_SAMPLES = 32  # at most this many keyframes of a copied episode go into its image stats


def stats_keyframes(idrs: frozenset[int], first: int, count: int) -> frozenset[int]:
    """Up to KEYFRAME_SAMPLES IDR positions in [first, first + count), spread evenly: the
    frames a copied episode's image statistics come from. Each decodes on its own; decoding
    every frame, or LeRobot's n**0.75 samples, would cost many times the copy itself (about
    25 ms per 720p IDR frame here)."""
    inside = sorted(p for p in idrs if first <= p < first + count)
    if not inside:
        return frozenset()
    picks = np.round(np.linspace(0, len(inside) - 1, min(len(inside), KEYFRAME_SAMPLES)))
    return frozenset(inside[i] for i in picks.astype(int).tolist())


def idr_positions(path: Path) -> frozenset[int]:
    """File positions whose packets can start a copy: IDR frames of an avcC H.264 stream
    without frame reordering (each packet is the next frame shown). Empty if the stream
    cannot be copied at all. Reads packets only, no decoding."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        context = stream.codec_context
        if context.name != layout.CODECS["h264"].name or context.has_b_frames:
            return frozenset()
        try:
            length_size = _nal_length_size(bytes(context.extradata or b""))
        except ValueError:
            return frozenset()
        starts = []
        position = -1
        for packet in container.demux(stream):
            if not packet.size:
                continue
            position += 1
            if is_idr(bytes(packet), length_size):
                starts.append(position)
    return frozenset(starts)


def extract_segment(path: Path, video: Path, first: int, count: int, *, fps: int) -> Segment:
    """The segment of frames [first, first + count) of a dataset video file, by stream copy:
    an episode of an earlier export, as it was joined (each episode starts on its own IDR)."""
    size = 0
    written = 0
    with av.open(str(video)) as src:
        in_stream = src.streams.video[0]
        ticks = in_stream.time_base
        assert ticks is not None
        with av.open(str(path), "w", format="mp4") as out:
            out_stream = out.add_stream_from_template(in_stream, opaque=True)
            out_stream.time_base = Fraction(1, fps)
            for packet in src.demux(in_stream):
                if not packet.size:
                    continue
                pts = _to_frames(packet.pts, ticks, fps) - first
                if not 0 <= pts < count:
                    continue
                dts = _to_frames(packet.dts, ticks, fps) - first
                packet.stream = out_stream
                packet.pts, packet.dts, packet.duration = pts, dts, 1
                packet.time_base = Fraction(1, fps)
                size += packet.size
                out.mux(packet)
                written += 1
    if written != count:
        raise BadInputError(f"holds {written} frames of the episode at frame {first}, "
                            f"{count} expected", video)
    return Segment(path=path, frames=written, bytes=size, copied=False,
                   signature=signature(path))


# --- joining segments into chunk files ------------------------------------------------------------
class VideoFileWriter:
    """Writes videos/<key>/chunk-*/file-*.mp4 by joining episode segments (stream copy).

    A new file starts at an episode boundary once the current one reaches the size limit, or
    when the next segment's stream parameters differ from the file's (a copied episode carries
    the recorder's encoder settings, a re-encoded one ours): a file holds one stream
    description. A file may exceed the size limit by at most one episode.
    """

    def __init__(self, root: Path, *, fps: int, width: int, height: int,
                 limits: layout.FileLimits) -> None:
        self.root, self.fps, self.width, self.height, self.limits = root, fps, width, height, limits
        self.chunk_index, self.file_index = 0, 0
        self.frames_in_file = 0
        self.bytes_in_file = 0
        self.files = 0
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self._signature: tuple[object, ...] | None = None
        self._pending: Segment | None = None

    def path(self, chunk_index: int, file_index: int) -> Path:
        return self.root / layout.VIDEO_PATH.format(video_key=layout.VIDEO_KEY,
                                                    chunk_index=chunk_index, file_index=file_index)

    def start_episode(self, segment: Segment) -> tuple[int, int, int]:
        """(chunk_index, file_index, first frame number in that file) for `segment`, the next
        episode's video; append() then writes it."""
        if self._container is not None and (
                self.bytes_in_file >= self.limits.video_mb * _MB
                or segment.signature != self._signature):
            self._close_file()
            self.chunk_index, self.file_index = layout.next_file(
                self.chunk_index, self.file_index, self.limits.chunks_size)
        if self._container is None:
            self.frames_in_file = 0
            self.bytes_in_file = 0
        self._pending = segment
        return self.chunk_index, self.file_index, self.frames_in_file

    def _open_file(self, template: av.video.stream.VideoStream,
                   signature: tuple[object, ...]) -> None:
        path = self.path(self.chunk_index, self.file_index)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(path), "w", format="mp4")
        stream = self._container.add_stream_from_template(template, opaque=True)
        stream.time_base = Fraction(1, self.fps)
        self._stream = stream
        self._signature = signature
        self.files += 1

    def append(self) -> int:
        """Append the segment given to start_episode; returns its frame count."""
        segment, self._pending = self._pending, None
        assert segment is not None
        offset = self.frames_in_file
        with av.open(str(segment.path)) as source:
            stream = source.streams.video[0]
            if self._container is None:
                self._open_file(stream, segment.signature)
            assert self._container is not None and self._stream is not None
            ticks = stream.time_base
            assert ticks is not None
            frames = 0
            for packet in source.demux(stream):
                if not packet.size:
                    continue
                packet.stream = self._stream
                packet.pts = offset + _to_frames(packet.pts, ticks, self.fps)
                packet.dts = offset + _to_frames(packet.dts, ticks, self.fps)
                packet.duration = 1
                packet.time_base = Fraction(1, self.fps)
                self.bytes_in_file += packet.size
                self._container.mux(packet)
                frames += 1
        if frames != segment.frames:
            raise RuntimeError(f"segment {segment.path} holds {frames} frames, "
                               f"{segment.frames} expected")
        self.frames_in_file += frames
        return frames

    def _close_file(self) -> None:
        if self._container is None:
            return
        self._container.close()
        self._container, self._stream, self._signature = None, None, None

    def close(self) -> None:
        self._close_file()


def _to_frames(ticks: int | None, time_base: Fraction, fps: int) -> int:
    if ticks is None:
        raise ValueError("a segment packet has no timestamp")
    return round(ticks * time_base * fps)


def signature(path: Path) -> tuple[object, ...]:
    """What must match for two segments to share one file: codec, size, format, extradata,
    read back from the segment file (an encoder's own extradata is in another syntax than
    the one the mp4 holds)."""
    with av.open(str(path)) as container:
        context = container.streams.video[0].codec_context
        return (context.name, context.width, context.height,
                context.format.name if context.format else None,
                bytes(context.extradata or b""))


# --- image statistics -----------------------------------------------------------------------------
def sampled_pixels(frame: av.VideoFrame) -> np.ndarray:
    """A frame sampled for image statistics as stats.ImageCounts.add takes it: RGB, height x
    width x 3 uint8, downsampled as LeRobot does (stats.downsample_hwc).

    Converted to RGB with PyAV's default conversion, as main's exporter did and as LeRobot reads
    frames back. With a bit-exact bicubic conversion instead, one channel's maximum came out 18 of
    255 levels above LeRobot's recomputation from the decoded video, beyond the test's tolerance
    (tests/export/test_lerobot_real.py, rollover; seen once while merging). frame.to_ndarray makes a
    converter of its own each time: with one kept VideoReformatter here, libx264's output for the
    same input frames differed from run to run (observed in tests/export/test_engine.py; the
    cause inside PyAV/libx264 was not pinned down)."""
    rgb = frame.to_ndarray(format="rgb24")
    return stats.downsample_hwc(rgb)


def iter_video_times(path: Path) -> Iterator[tuple[float, int, int]]:
    """(time in s, width, height) of every decoded frame of a dataset video, in decode order."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if frame.pts is None or frame.time_base is None:
                raise BadInputError("a video frame has no timestamp", path)
            yield float(frame.pts * frame.time_base), frame.width, frame.height
