"""Quality figures of a finished segment, computed from the frames and events actually kept."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pyarrow as pa

from capture.inputs import EventKind
from capture.session.manifest import QA

IDLE_GAP_NS = 2_000_000_000  # a gap this long without any input counts as idle time
PAUSE_FACTOR = 3  # frames further apart than this many intervals (not counted as drops): a pause


def capturing_seconds(capture_times_ns: np.ndarray, dropped_before: np.ndarray,
                      fps_target: float) -> float:
    """Time spent capturing: the span of every run of frames between pauses, each run counted
    from its first frame to one interval past its last (so n evenly spaced frames at the
    target rate span n / fps_target)."""
    times = np.asarray(capture_times_ns, dtype=np.int64)
    if len(times) == 0:
        return 0.0
    interval = 1e9 / fps_target
    gaps = np.diff(times).astype(np.float64)
    unexplained = gaps - np.asarray(dropped_before[1:], dtype=np.float64) * interval
    breaks = np.flatnonzero(unexplained > PAUSE_FACTOR * interval) + 1
    edges = [0, *breaks.tolist(), len(times)]
    return sum((float(times[hi - 1] - times[lo]) + interval) / 1e9
               for lo, hi in itertools.pairwise(edges))


def quality_summary(events: pa.Table, frames: pa.Table, fps_target: float,
                    start_ns: int, end_ns: int) -> QA:
    """QA of one segment; checks and notes are added by the writer."""
    n = frames.num_rows
    times = frames.column("capture_time_ns").to_numpy() if n else np.empty(0, np.int64)
    dropped_before = frames.column("dropped_before").to_numpy() if n else np.empty(0, np.int64)
    capturing_s = capturing_seconds(times, dropped_before, fps_target)
    fps_achieved = n / capturing_s if n > 1 and capturing_s > 0 else 0.0
    kinds = events.column("kind").to_pylist() if events.num_rows else []
    event_times = events.column("t_ns").to_pylist() if events.num_rows else []
    idle_ns = 0
    for a, b in itertools.pairwise([start_ns, *sorted(event_times), end_ns]):
        if b - a >= IDLE_GAP_NS:
            idle_ns += b - a
    focused_ns = 0
    focus_since: int | None = None
    for kind, t in zip(kinds, event_times, strict=True):
        if kind == EventKind.FOCUS_IN and focus_since is None:
            focus_since = t
        elif kind == EventKind.FOCUS_OUT and focus_since is not None:
            focused_ns += t - focus_since
            focus_since = None
    if focus_since is not None:
        focused_ns += max(0, end_ns - focus_since)
    return QA(
        duration_s=round(max(0, end_ns - start_ns) / 1e9, 3),
        frames=n,
        fps_achieved=round(fps_achieved, 3),
        dropped_frames=int(dropped_before.sum()) if n else 0,
        repeated_frames=int(sum(frames.column("repeated").to_pylist())) if n else 0,
        focused_s=round(focused_ns / 1e9, 3),
        idle_s=round(idle_ns / 1e9, 3),
        input_counts=dict(sorted(Counter(kinds).items())),
    )
