"""ObsVideoBackend against a real OBS recording the clockface window: every frame checked."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import pytest

from capture import formats, video
from capture.clock import now_ns
from capture.clockface import UNIT_NS, decode_clock, render_clock_rgb, running_clockface
from capture.errors import CaptureError
from capture.journal import read_journal
from capture.session.writer import video_output
from capture.video import CaptureTarget, VideoResult, VideoSettings
from capture.video.obs.backend import CLOCK_LOG, ObsVideoBackend
from capture.video.obs.obs_clock_script import fingerprint_rows, sample_rows
from capture.video.obs.recording import luma_fingerprint
from capture.video.obs.settings import ObsSettings
from capture.video.obs.timeline import fingerprint_distance
from capture.xserver import Xvfb
from tests.obs.harness import ObsInstance, busy_loops, obs_available

FPS = 30
OBS_AFTER = ("clock_window",)
INTERVAL_NS = 1e9 / FPS
needs_obs = pytest.mark.skipif(not obs_available(), reason="needs OBS Studio and Xvfb")






def backend_for(obs: ObsInstance) -> ObsVideoBackend:
    return ObsVideoBackend(ObsSettings(obs.host, obs.port, obs.password))


def decoded_frames(session_dir: Path) -> list[av.VideoFrame]:
    with av.open(str(session_dir / formats.VIDEO)) as container:
        return list(container.decode(video=0))


def test_the_obs_backend_is_registered() -> None:
    assert video.backend("obs") is ObsVideoBackend


def test_a_fingerprint_survives_h264(tmp_path: Path) -> None:
    times = range(0, 20 * 33_333_333, 33_333_333)
    path = tmp_path / "clock.mkv"
    originals = []
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for t in times:
            frame = av.VideoFrame.from_ndarray(render_clock_rgb(t, (640, 360)), format="rgb24")
            frame = frame.reformat(format="yuv420p")
            originals.append(luma_fingerprint(frame))
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with av.open(str(path)) as container:
        decoded = list(container.decode(video=0))
    assert len(decoded) == len(originals)
    for original, frame in zip(originals, decoded, strict=True):
        assert fingerprint_distance(original, luma_fingerprint(frame)) <= 2
    assert all(fingerprint_distance(a, b) > 5 for a, b in itertools.pairwise(originals))
    plane = np.frombuffer(decoded[0].planes[0], np.uint8).reshape(360, -1)[:, :640]
    rows = [plane[y].tobytes() for y in sample_rows(360)]
    assert bytes(luma_fingerprint(decoded[0])) == fingerprint_rows(rows, 640)


@dataclass
class FrameCheck:
    """Every frame of a recording against the host clock drawn in it."""

    frames: int = 0
    right: int = 0            # drawn clock read, capture time within one interval of it
    uncertain: int = 0        # marked time_uncertain (not checked against the drawn clock)
    unreadable: int = 0       # drawn clock not readable (counted)
    wrong: list[str] = field(default_factory=list)   # none of the above
    errors_ms: list[float] = field(default_factory=list)   # of the frames checked right


def check_every_frame(records: list[dict], frames: list[av.VideoFrame], redraws: np.ndarray,
                      interval_ns: float) -> FrameCheck:
    """Each frame is right, marked uncertain, or unreadable. "Right": the capture time is within
    one frame interval of the drawn clock, or, where the clock window had not redrawn (it shares
    the loaded machine), within one interval of the span that picture was on the screen."""
    check = FrameCheck(frames=len(records))
    for record, frame in zip(records, frames, strict=True):
        if record["time_uncertain"]:
            check.uncertain += 1
            continue
        capture = record["capture_time_ns"]
        drawn = decode_clock(frame.to_ndarray(format="rgb24"), near_ns=capture)
        if drawn is None:
            check.unreadable += 1
            continue
        if abs(capture - drawn) <= interval_ns \
                or off_screen_ns(capture, drawn, redraws) <= interval_ns:
            check.right += 1
            check.errors_ms.append((capture - drawn) / 1e6)
        else:
            check.wrong.append(f"frame {record['frame_index']}: {(capture - drawn) / 1e6:+.1f} "
                               f"ms, {off_screen_ns(capture, drawn, redraws) / 1e6:.1f} ms off "
                               "the screen span")
    return check


@needs_obs
@pytest.mark.x11
def test_records_every_frame_with_its_host_capture_time(obs: ObsInstance, xvfb: Xvfb,
                                                        tmp_path: Path) -> None:
    recorder = backend_for(obs)
    session_dir = tmp_path / "session"
    redraw_log = tmp_path / "redraws.npy"
    with running_clockface(xvfb.display, size=(1280, 720), redraw_log=redraw_log) as window:
        recorder.start(CaptureTarget(display=xvfb.display, window_id=window),
                       video_output(session_dir),
                       VideoSettings(fps=FPS))
        assert recorder.alive()
        time.sleep(4.0)
        result = recorder.stop()
    assert result.error is None, result.error
    assert not recorder.alive()
    records = list(read_journal(session_dir / formats.FRAMES_JOURNAL))
    frames = decoded_frames(session_dir)
    assert len(records) == len(frames) == result.frames
    assert 3.5 * FPS <= len(frames) <= 4.5 * FPS
    assert [r["pts"] for r in records] == [f.pts for f in frames]
    assert [r["frame_index"] for r in records] == list(range(len(records)))
    times = np.array([r["capture_time_ns"] for r in records])
    assert np.all(times > 0) and np.all(np.diff(times) >= 0)
    check = check_every_frame(records, frames, np.load(redraw_log), INTERVAL_NS)
    assert check.wrong == []
    assert check.unreadable <= 0.01 * check.frames, check
    assert check.uncertain == 0, result.notes      # an idle 30 fps recording: all established
    assert np.percentile(np.abs(check.errors_ms), 50) <= 3.0, sorted(check.errors_ms)
    assert (session_dir / CLOCK_LOG).exists()
    assert result.backend == "obs" and (result.width, result.height) == (1280, 720)
    assert any("renderSkippedFrames" in note for note in result.notes)
    assert not any("poorly" in note for note in result.notes), result.notes
    assert result.repeated_frames == sum(r["repeated"] for r in records)


@needs_obs
@pytest.mark.x11
@pytest.mark.slow
def test_under_render_lag_every_frame_is_right_or_marked_uncertain(
        xvfb: Xvfb, clock_window: int, tmp_path: Path) -> None:
    # 60 fps with two busy loops on the 2 cores: OBS lags most render ticks (issue 8).
    fps = 60
    with ObsInstance(tmp_path / "obs60", xvfb.display, fps=fps, size=(1280, 720)) as obs60:
        # What is checked is every frame's time, not how fast OBS gets ready under this load:
        # in full CI runs OBS twice did not get ready under it (within 25 s, then 90 s), so the
        # load starts once the recording has.
        recorder = ObsVideoBackend(ObsSettings(obs60.host, obs60.port, obs60.password),
                                   start_timeout_s=90)
        session_dir = tmp_path / "session"
        redraw_log = tmp_path / "redraws.npy"
        with running_clockface(xvfb.display, size=(1280, 720), redraw_log=redraw_log) as window:
            recorder.start(CaptureTarget(display=xvfb.display, window_id=window),
                           video_output(session_dir), VideoSettings(fps=fps))
            with busy_loops(2, max_s=60):
                time.sleep(4.0)
                result = recorder.stop()
        # Nothing writes into the session once stop() returned, though OBS keeps running.
        written = {p.name: p.read_bytes() for p in session_dir.iterdir()}
        time.sleep(2.0)
        assert {p.name: p.read_bytes() for p in session_dir.iterdir()} == written
    assert result.error is None, result.error
    records = list(read_journal(session_dir / formats.FRAMES_JOURNAL))
    frames = decoded_frames(session_dir)
    assert len(records) == len(frames) > 2 * fps
    check = check_every_frame(records, frames, np.load(redraw_log), 1e9 / fps)
    assert check.wrong == [], (check.wrong, result.notes)
    assert check.unreadable <= 0.01 * check.frames, check
    assert check.uncertain == sum(r["time_uncertain"] for r in records)
    assert check.right + check.uncertain + check.unreadable == check.frames


def off_screen_ns(capture_ns: int, drawn_ns: int, redraws: np.ndarray) -> int:
    """How far `capture_ns` lies outside the span the picture of clock value `drawn_ns` was
    on the screen: from its redraw until the next redraw was done (0 if inside)."""
    index = int(np.searchsorted(redraws[:, 0], drawn_ns + UNIT_NS, side="left")) - 1
    shown_from = int(redraws[index, 0])
    shown_until = int(redraws[index + 1, 1]) if index + 1 < len(redraws) else capture_ns
    return max(shown_from - capture_ns, 0) + max(capture_ns - shown_until, 0)


@needs_obs
@pytest.mark.x11
def test_a_pause_leaves_no_frames_for_its_duration(obs: ObsInstance, xvfb: Xvfb,
                                                   tmp_path: Path) -> None:
    recorder = backend_for(obs)
    session_dir = tmp_path / "session"
    redraw_log = tmp_path / "redraws.npy"
    with running_clockface(xvfb.display, size=(1280, 720), redraw_log=redraw_log) as window:
        result, moments = record_with_pauses(
            recorder, CaptureTarget(display=xvfb.display, window_id=window), session_dir)
    assert result.error is None, result.error
    records = list(read_journal(session_dir / formats.FRAMES_JOURNAL))
    frames = decoded_frames(session_dir)
    assert len(records) == len(frames)
    times = np.array([r["capture_time_ns"] for r in records])
    margin = 0.15e9   # a pause takes effect ~2 frames after it is asked for, over a round trip
    paused_at, resumed_at, paused_again_at, stop_asked_at = moments
    inside = (times > paused_at + margin) & (times < resumed_at - margin)
    assert not inside.any(), f"{inside.sum()} frames inside the pause"
    late = times[times > paused_again_at + margin]
    assert np.all(late > stop_asked_at - margin), "frames while paused before the stop"
    assert len(late) <= 1     # OBS may still write the frame of the moment it was told to stop
    assert np.diff(times).max() > 1.2e9
    check = check_every_frame(records, frames, np.load(redraw_log), INTERVAL_NS)
    assert check.wrong == [], (check.wrong, result.notes)
    assert check.unreadable <= 0.01 * check.frames, check


def record_with_pauses(recorder: ObsVideoBackend, target: CaptureTarget,
                       session_dir: Path) -> tuple[VideoResult, tuple[int, int, int, int]]:
    """Record with a pause in the middle and a stop while paused; returns the result and the
    moments paused, resumed, paused again and asked to stop."""
    recorder.start(target, video_output(session_dir), VideoSettings(fps=FPS))
    recorder.set_capturing(False)      # what the recorder does right after start ...
    recorder.set_capturing(True)       # ... and once the game has focus
    time.sleep(1.5)
    recorder.set_capturing(False)
    paused_at = now_ns()
    time.sleep(1.5)
    resumed_at = now_ns()
    recorder.set_capturing(True)
    time.sleep(1.5)
    recorder.set_capturing(False)      # and it stops while paused
    paused_again_at = now_ns()
    time.sleep(0.8)
    stop_asked_at = now_ns()
    return recorder.stop(), (paused_at, resumed_at, paused_again_at, stop_asked_at)


@needs_obs
@pytest.mark.x11
def test_an_fps_other_than_obs_records_is_refused_with_the_fix(obs: ObsInstance,
                                                                xvfb: Xvfb, clock_window: int,
                                                                tmp_path: Path) -> None:
    recorder = backend_for(obs)
    with pytest.raises(CaptureError, match=r"capture obs setup --fps 60"):
        recorder.start(CaptureTarget(display=xvfb.display, window_id=clock_window),
                       video_output(tmp_path / "session"), VideoSettings(fps=60))
    assert not recorder.alive()
