"""The ground-truth clock decodes back to the drawn time, also after grab, H.264 and decode."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from capture.clock import now_ns
from capture.clockface import (
    UNIT_NS,
    WRAP_NS,
    clock_bits,
    decode_clock,
    render_clock_rgb,
    running_clockface,
)
from capture.session.writer import video_output
from capture.video import CaptureTarget, VideoSettings
from capture.video.builtin import BuiltinVideoBackend
from capture.xserver import Xvfb
from tests.video.media import decode_video, read_frames

FPS = 30


@pytest.mark.parametrize("t_ns", [0, 123_456_789, now_ns(), WRAP_NS - 1, 7 * WRAP_NS // 3])
def test_rendered_clock_decodes_to_the_same_step(t_ns: int) -> None:
    decoded = decode_clock(render_clock_rgb(t_ns), near_ns=t_ns)
    assert decoded is not None
    assert abs(decoded - t_ns) <= UNIT_NS // 2


def test_neighbouring_steps_differ_in_one_value_block() -> None:
    for t_ns in range(0, 50 * UNIT_NS, UNIT_NS):
        before, after = clock_bits(t_ns)[:40], clock_bits(t_ns + UNIT_NS)[:40]
        assert sum(a != b for a, b in zip(before, after, strict=True)) == 1


def test_blur_and_noise_are_tolerated() -> None:
    t_ns = 987_654_321_000
    picture = cv2.GaussianBlur(render_clock_rgb(t_ns), (9, 9), 3)
    noisy = np.clip(picture + np.random.default_rng(1).normal(0, 12, picture.shape), 0, 255)
    assert decode_clock(noisy.astype(np.uint8), near_ns=t_ns) == t_ns // UNIT_NS * UNIT_NS \
        + UNIT_NS // 2


def test_unreadable_pictures_give_none() -> None:
    t_ns = 5_000_000_000
    grey = np.full((360, 640, 3), 128, dtype=np.uint8)
    assert decode_clock(grey) is None
    corrupted = render_clock_rgb(t_ns)
    corrupted[16:48, 16:48] = 255 - corrupted[16:48, 16:48]  # flip one block: checksum fails
    assert decode_clock(corrupted) is None
    assert decode_clock(np.zeros((40, 40, 3), dtype=np.uint8)) is None


@pytest.mark.x11
def test_clock_survives_grab_encode_decode(xvfb: Xvfb, tmp_path: Path) -> None:
    stats_path = tmp_path / "clockface.json"
    recorder = BuiltinVideoBackend()
    with running_clockface(xvfb.display, size=(640, 360), position=(20, 20),
                           stats_path=stats_path) as window_id:
        recorder.start(CaptureTarget(display=xvfb.display, window_id=window_id),
                       video_output(tmp_path), VideoSettings(fps=FPS))
        time.sleep(1.2)
        result = recorder.stop()
    assert result.error is None
    frames = read_frames(tmp_path)
    pictures = decode_video(tmp_path / "video.mkv")
    assert len(pictures) == len(frames) > 20
    errors_ms = []
    for record, (_, picture) in zip(frames, pictures, strict=True):
        drawn = decode_clock(picture, near_ns=record["capture_time_ns"])
        if drawn is not None:
            errors_ms.append((record["capture_time_ns"] - drawn) / 1e6)
    assert len(errors_ms) >= 0.9 * len(frames)
    assert result.repeated_frames == 0  # the clock changes between any two grabs
    # the picture is at most one redraw older than its capture time, give or take a little
    assert abs(float(np.median(errors_ms))) < 5
    assert min(errors_ms) > -5 and max(errors_ms) < 1000 / FPS
    assert json.loads(stats_path.read_text())["rate_hz"] > 200
