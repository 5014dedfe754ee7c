"""The MKV file OBS recorded: its frames' presentation times, and their fingerprints on demand."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from capture.video.obs.obs_clock_script import fingerprint_rows, sample_rows
from capture.video.obs.timeline import FINGERPRINT_SIZE, MATCH_WINDOW


class RecordingFile:
    """An MKV written by OBS: frame presentation times, and luma fingerprints on demand."""

    def __init__(self, path: Path) -> None:
        import av

        self.path = path
        self.damaged = False
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            self.time_base = Fraction(stream.time_base or Fraction(1, 1000))
            self.width, self.height = int(stream.width), int(stream.height)
            self.codec = stream.codec_context.name
            pts: list[int] = []
            try:
                for packet in container.demux(stream):
                    if packet.pts is not None and packet.size:
                        pts.append(int(packet.pts))
            except av.error.FFmpegError:
                self.damaged = True
        self.pts = sorted(set(pts))
        self._cache: dict[int, npt.NDArray[np.uint8]] = {}
        if self.pts:
            self._drop_undecodable_tail()

    def _drop_undecodable_tail(self) -> None:
        """A frame at the end whose packet is there but never decodes is not a frame."""
        first = max(0, len(self.pts) - MATCH_WINDOW)
        decoded = self._decode_from(first, len(self.pts))
        kept = [p for p in self.pts[first:] if p in decoded]
        if len(kept) < len(self.pts) - first:
            self.pts = self.pts[:first] + kept

    def fingerprints(self, positions: Sequence[int]) -> npt.NDArray[np.uint8]:
        """Fingerprints of the frames at `positions` (0-based, in presentation order)."""
        wanted = [self.pts[p] for p in positions]
        missing = sorted(p for p in positions if self.pts[p] not in self._cache)
        run_start = 0
        for i in range(1, len(missing) + 1):
            if i == len(missing) or missing[i] - missing[i - 1] > MATCH_WINDOW:
                if missing:
                    self._decode_from(missing[run_start], missing[i - 1] + 1)
                run_start = i
        empty = np.zeros(FINGERPRINT_SIZE, dtype=np.uint8)
        return np.array([self._cache.get(p, empty) for p in wanted], dtype=np.uint8)

    def _decode_from(self, first: int, end: int) -> set[int]:
        """Decode frames [first, end) (seeking to the keyframe before); returns decoded pts."""
        import av

        start_pts, last_pts = self.pts[first], self.pts[end - 1]
        decoded: set[int] = set()
        with av.open(str(self.path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if first > 0:
                container.seek(start_pts, stream=stream, backward=True)
            try:
                for frame in container.decode(stream):
                    if frame.pts is None or frame.pts < start_pts:
                        continue
                    decoded.add(int(frame.pts))
                    if int(frame.pts) not in self._cache:
                        self._cache[int(frame.pts)] = luma_fingerprint(frame)
                    if frame.pts >= last_pts:
                        break
            except av.error.FFmpegError:
                self.damaged = True
        return decoded


def luma_fingerprint(frame: Any) -> npt.NDArray[np.uint8]:
    """The clock script's fingerprint of a decoded frame (8-bit planar YUV)."""
    plane = frame.planes[0]
    luma = np.frombuffer(plane, dtype=np.uint8).reshape(frame.height, plane.line_size)
    rows = [luma[y, :frame.width].tobytes() for y in sample_rows(frame.height)]
    return np.frombuffer(fingerprint_rows(rows, frame.width), dtype=np.uint8)
