"""The encoder process: H.264 into Matroska from the shared ring, and the frames journal."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

from capture.clock import now_ns
from capture.errors import CaptureError, DiskFullError, is_disk_full
from capture.video._base import VideoOutput, VideoSettings
from capture.video._grab import FrameMessage, RingSpec, Signals, ignore_interrupts

TIME_BASE = Fraction(1, 1000)    # Matroska stores milliseconds whatever we ask for
CLUSTER_TIME_LIMIT_MS = 250      # a crash loses at most the open cluster
TERM_GRACE_NS = 2_000_000_000    # after SIGTERM, wait this long for the grabber's end of stream
POLL_S = 0.1

if TYPE_CHECKING:
    from av.video.stream import VideoStream


@dataclass(frozen=True, slots=True)
class EncodePlan:
    output: VideoOutput
    settings: VideoSettings


class _Encoder:
    """Owns the container, the stream and the frames journal of one recording."""

    def __init__(self, plan: EncodePlan, spec: RingSpec, ring: Any) -> None:
        import av
        import cv2

        cv2.setNumThreads(1)  # the game needs the other core more than we do
        self._cv2 = cv2
        self._av = av
        self.slots = spec.views(ring)
        self.width, self.height = spec.width - spec.width % 2, spec.height - spec.height % 2
        self.notes: list[str] = []
        if (self.width, self.height) != (spec.width, spec.height):
            self.notes.append(f"cropped {spec.width}x{spec.height} to {self.width}x{self.height}: "
                              "H.264 4:2:0 needs even sizes (the right column/bottom row is lost)")
        settings = plan.settings
        self.container = av.open(
            str(plan.output.video), "w", format="matroska",
            container_options={"cluster_time_limit": str(CLUSTER_TIME_LIMIT_MS),
                               "flush_packets": "1"},
        )
        self.stream = cast("VideoStream",
                           self.container.add_stream(settings.codec, rate=settings.fps))
        self.stream.width, self.stream.height = self.width, self.height
        self.stream.pix_fmt = "yuv420p"
        self.stream.time_base = TIME_BASE
        codec_context = self.stream.codec_context
        codec_context.time_base = TIME_BASE
        codec_context.gop_size = max(1, round(settings.gop_seconds * settings.fps))
        # BT.601 limited range is what cv2's I420 conversion produces; say so in the file.
        codec_context.color_range = 1  # AVCOL_RANGE_MPEG
        codec_context.colorspace = 6   # AVCOL_SPC_SMPTE170M
        options: dict[str, object] = {"preset": settings.preset, "crf": str(settings.crf),
                                      "threads": "1"}
        if settings.codec == "libx264":
            options["tune"] = "zerolatency"  # no lookahead, no B-frames: a packet per frame at once
        self.stream.options = options
        self.container.start_encoding()  # the header is on disk before the first frame
        self.codec = av.codec.Codec(settings.codec, "w").canonical_name
        self.journal = plan.output.timeline.writer()
        self.first_capture_ns: int | None = None
        self.last_pts = -1
        self.previous_picture: npt.NDArray[np.uint8] | None = None
        self.frames = self.dropped_slots = self.repeated_frames = 0

    def add(self, message: FrameMessage, signals: Signals) -> None:
        slot, capture_time, grab_duration, dropped_before = message
        bgra = self.slots[slot, :self.height, :self.width]
        picture = cast("npt.NDArray[np.uint8]",
                       self._cv2.cvtColor(bgra, self._cv2.COLOR_BGRA2YUV_I420))
        signals.consumed.value += 1  # the slot is free again
        repeated = self.previous_picture is not None and np.array_equal(
            picture, self.previous_picture)
        self.previous_picture = picture
        if self.first_capture_ns is None:
            self.first_capture_ns = capture_time
        pts = max(round((capture_time - self.first_capture_ns) / 1e6), self.last_pts + 1)
        self.last_pts = pts
        frame = self._av.VideoFrame.from_ndarray(picture, format="yuv420p")
        frame.pts, frame.time_base = pts, TIME_BASE
        self.container.mux(self.stream.encode(frame))
        self.journal.append({
            "frame_index": self.frames, "capture_time_ns": capture_time,
            "grab_duration_ns": grab_duration, "dropped_before": dropped_before,
            "repeated": repeated, "pts": pts,
        })
        if self.journal.error is not None:  # the disk is full: stop, keep what was written
            raise self.journal.error
        self.frames += 1
        self.dropped_slots += dropped_before
        self.repeated_frames += repeated

    def close(self) -> None:
        try:
            self.container.mux(self.stream.encode(None))
            self.container.close()
        finally:
            self.journal.close()


def run_encoder(plan: EncodePlan, spec: RingSpec, ring: Any, signals: Signals,
                frames_in: Connection, status_out: Connection) -> None:
    """Process entry: report ready, encode until the grabber's end of stream, report the result."""
    terminated = ignore_interrupts()
    try:
        encoder = _Encoder(plan, spec, ring)
    except Exception as exc:
        status_out.send(("failed", f"the video encoder could not start: {exc!r}"))
        return
    status_out.send(("ready", {}))
    error: str | None = None
    stream_cut = False  # the grabber vanished without ending the stream
    terminated_at: int | None = None
    try:
        while True:
            if terminated[0]:
                terminated_at = terminated_at or now_ns()
                if now_ns() - terminated_at > TERM_GRACE_NS:
                    encoder.notes.append("terminated before the grabber ended the stream")
                    break
            if not frames_in.poll(POLL_S):
                continue
            message = frames_in.recv()
            if message is None:
                break
            encoder.add(message, signals)
    except EOFError:
        stream_cut = True
    except CaptureError as exc:
        error = str(exc)
    except Exception as exc:
        error = (str(DiskFullError(plan.output.video)) if is_disk_full(exc)
                 else f"the video encoder failed: {exc!r}")
    try:
        encoder.close()
    except Exception as exc:
        error = error or (str(DiskFullError(plan.output.video)) if is_disk_full(exc)
                          else f"the video file could not be finished: {exc!r}")
    with contextlib.suppress(OSError):
        status_out.send(("result", {
            "frames": encoder.frames, "dropped_slots": encoder.dropped_slots,
            "repeated_frames": encoder.repeated_frames, "width": encoder.width,
            "height": encoder.height, "codec": encoder.codec, "cpu_seconds": time.process_time(),
            "notes": encoder.notes, "error": error, "stream_cut": stream_cut,
        }))
