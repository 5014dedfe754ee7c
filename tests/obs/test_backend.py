"""ObsVideoBackend against a real OBS recording the clockface window: every frame timed."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
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
from capture.video import CaptureTarget, VideoSettings
from capture.video.obs.backend import CLOCK_LOG, ObsVideoBackend
from capture.video.obs.obs_clock_script import fingerprint_rows, sample_rows
from capture.video.obs.recording import luma_fingerprint
from capture.video.obs.settings import ObsSettings
from capture.video.obs.timeline import fingerprint_distance
from capture.xserver import Xvfb
from tests.obs.harness import ObsInstance, obs_available

FPS = 30
INTERVAL_NS = 1e9 / FPS
needs_obs = pytest.mark.skipif(not obs_available(), reason="needs OBS Studio and Xvfb")


@pytest.fixture(scope="module")
def clock_window(xvfb: Xvfb) -> Iterator[int]:
    with running_clockface(xvfb.display, size=(1280, 720)) as window_id:
        yield window_id


@pytest.fixture(scope="module")
def obs(tmp_path_factory: pytest.TempPathFactory, xvfb: Xvfb,
        clock_window: int) -> Iterator[ObsInstance]:
    with ObsInstance(tmp_path_factory.mktemp("obs"), xvfb.display, fps=FPS,
                     size=(1280, 720)) as instance:
        yield instance


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
    sample = list(zip(records, frames, strict=True))[::3]
    drawn = [decode_clock(f.to_ndarray(format="rgb24"), near_ns=r["capture_time_ns"])
             for r, f in sample]
    readable = [(r["capture_time_ns"], d) for (r, _f), d in zip(sample, drawn, strict=True)
                if d is not None]
    assert len(readable) >= 0.9 * len(sample)
    redraws = np.load(redraw_log)
    for capture, shown in readable:
        # Off by more than a frame only where the clock window itself had not redrawn: then the
        # capture time still lies in the span the picture was on the screen.
        if abs(capture - shown) > INTERVAL_NS:
            assert 0 <= off_screen_ns(capture, shown, redraws) <= INTERVAL_NS, \
                (capture - shown) / 1e6
    errors = np.array([capture - shown for capture, shown in readable]) / 1e6
    assert np.percentile(np.abs(errors), 50) <= 3.0, sorted(errors)
    assert (session_dir / CLOCK_LOG).exists()
    assert result.backend == "obs" and (result.width, result.height) == (1280, 720)
    assert any("renderSkippedFrames" in note for note in result.notes)
    assert not any("poorly" in note for note in result.notes), result.notes
    assert result.repeated_frames == sum(r["repeated"] for r in records)


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
                                                   clock_window: int, tmp_path: Path) -> None:
    recorder = backend_for(obs)
    session_dir = tmp_path / "session"
    recorder.start(CaptureTarget(display=xvfb.display, window_id=clock_window),
                   video_output(session_dir),
                   VideoSettings(fps=FPS))
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
    result = recorder.stop()
    assert result.error is None, result.error
    records = list(read_journal(session_dir / formats.FRAMES_JOURNAL))
    frames = decoded_frames(session_dir)
    assert len(records) == len(frames)
    times = np.array([r["capture_time_ns"] for r in records])
    margin = 0.15e9   # a pause takes effect ~2 frames after it is asked for, over a round trip
    inside = (times > paused_at + margin) & (times < resumed_at - margin)
    assert not inside.any(), f"{inside.sum()} frames inside the pause"
    late = times[times > paused_again_at + margin]
    assert np.all(late > stop_asked_at - margin), "frames while paused before the stop"
    assert len(late) <= 1     # OBS may still write the frame of the moment it was told to stop
    assert np.diff(times).max() > 1.2e9
    for record, frame in list(zip(records, frames, strict=True))[::4]:
        drawn = decode_clock(frame.to_ndarray(format="rgb24"), near_ns=record["capture_time_ns"])
        if drawn is not None:
            assert abs(record["capture_time_ns"] - drawn) <= INTERVAL_NS


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
