"""Record-time checks of a finished segment: length, fps, drops, game visible, input activity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np

from capture.inputs import EventKind
from capture.session.manifest import QA, Check

MIN_LENGTH_S = 5.0
MIN_FPS_RATIO = 0.9
MAX_DROPPED_RATIO = 0.02
BLACK_MEAN_LUMA = 8.0      # 0-255; a captured game is brighter than this somewhere
FLAT_LUMA_STD = 2.0        # ... and not one flat colour
SAMPLED_FRAMES = 5
ACTIVE_KINDS = (EventKind.KEY_PRESS, EventKind.BUTTON_PRESS, EventKind.MOTION, EventKind.WHEEL,
                EventKind.GAMEPAD_AXIS, EventKind.GAMEPAD_BUTTON_PRESS)


def _check(name: str, ok: bool, value: Any, detail: str) -> Check:
    return Check(name=name, ok=bool(ok), value=value, detail=detail)


def sample_luma(video: Path, frame_pts: list[int],
                samples: int = SAMPLED_FRAMES) -> list[tuple[float, float]]:
    """(mean, std) of luma for a few frames spread over the video; [] if none decode.

    `frame_pts` are the timeline's frames (their PTS in the file): each sampled frame is reached
    by seeking, so a long segment is not decoded from its start.
    """
    if not frame_pts or not video.exists():
        return []
    picks = np.linspace(0, len(frame_pts) - 1, num=min(samples, len(frame_pts)))
    wanted = sorted({frame_pts[i] for i in picks.round().astype(int).tolist()})
    out = []
    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            for pts in wanted:
                container.seek(pts, stream=stream, backward=True)
                for frame in container.decode(stream):
                    if frame.pts is not None and frame.pts >= pts:
                        luma = frame.to_ndarray(format="gray")
                        out.append((float(luma.mean()), float(luma.std())))
                        break
    except (av.error.FFmpegError, IndexError):
        pass  # an unreadable video shows up as "not captured"
    return out


def active_inputs(qa: QA) -> int:
    """Presses, motion, wheel and gamepad events: what the input-activity check counts (and the
    number the page and the CLI show as the segment's inputs)."""
    return sum(int(qa.input_counts.get(k, 0)) for k in ACTIVE_KINDS)


def run_checks(qa: QA, fps_target: float, video: Path,
               frame_pts: list[int]) -> tuple[Check, ...]:
    """The checks shown to the player right after a segment is recorded."""
    frames = qa.frames
    duration = qa.duration_s
    fps = qa.fps_achieved
    dropped = qa.dropped_frames
    active = active_inputs(qa)
    luma = sample_luma(video, frame_pts)
    visible = [m > BLACK_MEAN_LUMA and s > FLAT_LUMA_STD for m, s in luma]
    drop_ratio = dropped / max(1, frames + dropped)
    return (
        _check("length", frames > 0 and duration >= MIN_LENGTH_S, round(duration, 1),
               f"{duration:.1f} s recorded, {frames} frames" if frames
               else "no frames: the game never had focus"),
        _check("fps", frames > 1 and fps >= MIN_FPS_RATIO * fps_target, round(fps, 1),
               f"{fps:.1f} of {fps_target:g} fps achieved"),
        _check("dropped_frames", drop_ratio <= MAX_DROPPED_RATIO, dropped,
               f"{dropped} frame slots dropped ({100 * drop_ratio:.1f} %)"),
        _check("game_visible", bool(visible) and sum(visible) > len(visible) / 2,
               f"{sum(visible)}/{len(visible)}",
               "the game is visible in the video" if visible and all(visible)
               else f"{len(visible) - sum(visible)} of {len(visible)} sampled frames are black "
                    "or one flat colour"),
        _check("input_activity", active > 0, active,
               f"{active} input events" if active else "no keyboard, mouse or gamepad input"),
    )
