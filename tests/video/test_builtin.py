"""The built-in recorder on a real Xvfb: timeline, pictures, pause, drops and crashes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from capture.clock import now_ns
from capture.errors import CaptureError
from capture.session.writer import video_output
from capture.video import CaptureTarget, VideoResult, VideoSettings, backend
from capture.video.builtin import RING_SLOTS, BuiltinVideoBackend
from capture.xserver import Xvfb
from tests.video.media import (
    ColourWindow,
    decode_video,
    decoded_pts,
    matches_quadrants,
    read_frames,
)

pytestmark = pytest.mark.x11
FPS = 30
WINDOW_SIZE = (320, 240)


@dataclass
class Recording:
    """One ~3 s recording: the window moves at 0.5 s and the recorder pauses from 1.2 s to 2.2 s."""

    session_dir: Path
    result: VideoResult
    starting_ns: int
    started_ns: int
    stopped_ns: int
    moved_ns: int
    paused_ns: int
    resumed_ns: int
    frames: list[dict[str, Any]]
    pictures: list[tuple[int, np.ndarray]]


@pytest.fixture(scope="module")
def recording(xvfb: Xvfb, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recording]:
    window = ColourWindow(xvfb.display, 40, 30, *WINDOW_SIZE)
    session_dir = tmp_path_factory.mktemp("session")
    recorder = BuiltinVideoBackend()
    try:
        starting = now_ns()
        recorder.start(CaptureTarget(display=xvfb.display, window_id=window.id),
                       video_output(session_dir), VideoSettings(fps=FPS))
        started = now_ns()
        assert recorder.alive()
        time.sleep(0.5)
        moved = now_ns()
        window.move(500, 300)
        time.sleep(0.7)
        recorder.set_capturing(False)
        paused = now_ns()  # from here on no grab may start
        time.sleep(1.0)
        resumed = now_ns()
        recorder.set_capturing(True)
        time.sleep(0.8)
        stopped = now_ns()
        result = recorder.stop()
    finally:
        window.close()
    yield Recording(session_dir, result, starting, started, stopped, moved, paused, resumed,
                    read_frames(session_dir), decode_video(session_dir / "video.mkv"))


def test_backend_is_registered_under_its_name() -> None:
    assert backend("builtin") is BuiltinVideoBackend
    assert BuiltinVideoBackend.name == "builtin"


def test_result_reports_what_was_written(recording: Recording) -> None:
    result = recording.result
    assert result.error is None, result.error
    assert result.frames == len(recording.frames) == len(recording.pictures)
    assert (result.width, result.height, result.codec) == (*WINDOW_SIZE, "h264")
    assert result.dropped_slots == sum(f["dropped_before"] for f in recording.frames)
    assert result.repeated_frames == sum(f["repeated"] for f in recording.frames)
    assert result.cpu_seconds > 0
    assert any("MIT-SHM is working" in note for note in result.notes)  # the fast grab path


def test_journal_matches_the_video_frame_by_frame(recording: Recording) -> None:
    assert [f["frame_index"] for f in recording.frames] == list(range(len(recording.frames)))
    assert [f["pts"] for f in recording.frames] == [pts for pts, _ in recording.pictures]
    first = recording.frames[0]["capture_time_ns"]
    for record in recording.frames:  # pts is the capture time in ms since the first frame
        assert abs(record["pts"] - (record["capture_time_ns"] - first) / 1e6) <= 1
        assert 0 < record["grab_duration_ns"] < 50_000_000


def test_capture_times_increase_inside_the_recording(recording: Recording) -> None:
    times = np.array([f["capture_time_ns"] for f in recording.frames])
    assert np.all(np.diff(times) > 0)
    assert recording.starting_ns < times[0] <= recording.started_ns + 100_000_000
    assert times[-1] <= recording.stopped_ns + 50_000_000


def test_frames_come_at_the_requested_rate(recording: Recording) -> None:
    times = np.array([f["capture_time_ns"] for f in recording.frames])
    intervals = np.diff(times)
    intervals = intervals[intervals < 0.5e9]  # leave out the pause
    assert abs(np.median(intervals) / (1e9 / FPS) - 1) < 0.10
    expected = (recording.stopped_ns - recording.started_ns
                - (recording.resumed_ns - recording.paused_ns)) / 1e9 * FPS
    assert len(times) + recording.result.dropped_slots >= 0.9 * expected


def test_pictures_show_the_window_and_follow_it_when_it_moves(recording: Recording) -> None:
    settle_ns = 100_000_000  # the move arrives as an event before the next grab
    checked = 0
    for record, (_, picture) in zip(recording.frames, recording.pictures, strict=True):
        if recording.moved_ns <= record["capture_time_ns"] < recording.moved_ns + settle_ns:
            continue
        assert matches_quadrants(picture), f"frame {record['frame_index']} shows other pixels"
        checked += 1
    assert checked > 0.7 * len(recording.frames)


def test_pause_grabs_nothing_and_counts_no_drops(recording: Recording) -> None:
    margin = 5_000_000
    times = [f["capture_time_ns"] for f in recording.frames]
    inside = [t for t in times if recording.paused_ns + margin < t < recording.resumed_ns]
    assert inside == []
    first_after = next(f for f in recording.frames if f["capture_time_ns"] >= recording.resumed_ns)
    assert first_after["dropped_before"] == 0
    assert recording.result.dropped_slots < 3


def test_start_refuses_a_missing_window(xvfb: Xvfb, tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="does not exist"):
        BuiltinVideoBackend().start(CaptureTarget(display=xvfb.display, window_id=0x3FFFFF),
                                    video_output(tmp_path), VideoSettings())


def test_start_reports_an_encoder_that_cannot_start(xvfb: Xvfb, tmp_path: Path) -> None:
    recorder = BuiltinVideoBackend()
    with pytest.raises(CaptureError, match="encoder could not start"):
        recorder.start(CaptureTarget(display=xvfb.display, region=(0, 0, 64, 64)),
                       video_output(tmp_path),
                       VideoSettings(codec="no-such-codec"))
    assert not recorder.alive()
    assert all(not psutil.pid_exists(pid) for pid in recorder.pids.values() if pid)


def test_odd_region_is_cropped_to_even_and_noted(xvfb: Xvfb, tmp_path: Path) -> None:
    window = ColourWindow(xvfb.display, 0, 0, *WINDOW_SIZE)
    recorder = BuiltinVideoBackend()
    try:
        recorder.start(CaptureTarget(display=xvfb.display, region=(10, 10, 101, 57)),
                       video_output(tmp_path),
                       VideoSettings(fps=FPS))
        time.sleep(0.4)
        result = recorder.stop()
    finally:
        window.close()
    assert (result.width, result.height) == (100, 56)
    assert any("cropped 101x57 to 100x56" in note for note in result.notes)
    pictures = decode_video(tmp_path / "video.mkv")
    assert len(pictures) == result.frames > 0
    assert pictures[0][1].shape == (56, 100, 3)
    assert result.repeated_frames == result.frames - 1  # nothing on screen changes


def test_a_stalled_encoder_makes_drops_not_delays(xvfb: Xvfb, tmp_path: Path) -> None:
    window = ColourWindow(xvfb.display, 0, 0, *WINDOW_SIZE)
    recorder = BuiltinVideoBackend()
    try:
        recorder.start(CaptureTarget(display=xvfb.display, window_id=window.id),
                       video_output(tmp_path), VideoSettings(fps=FPS))
        time.sleep(0.3)
        encoder = psutil.Process(recorder.pids["encoder"])
        encoder.suspend()
        time.sleep(0.6)
        encoder.resume()
        time.sleep(0.3)
        result = recorder.stop()
    finally:
        window.close()
    frames = read_frames(tmp_path)
    assert result.error is None
    assert result.dropped_slots == sum(f["dropped_before"] for f in frames)
    held_back = RING_SLOTS + 2  # the ring fills up first; +2 for the moments around the stall
    assert result.dropped_slots >= 0.6 * FPS - held_back
    stall = max(frames, key=lambda f: f["dropped_before"])
    assert stall["dropped_before"] >= 0.6 * FPS - held_back
    assert any("encoder behind" in note for note in result.notes)
    times = np.array([f["capture_time_ns"] for f in frames])
    slots = np.round((times - times[0]) * FPS / 1e9)
    ordinal = np.arange(len(frames)) + np.cumsum([f["dropped_before"] for f in frames])
    # every frame is still taken in its own slot: the grabber never waited for the encoder
    assert np.all(np.abs(slots - (ordinal - ordinal[0])) <= 1)


@pytest.mark.parametrize("victim", ["grabber", "encoder"])
def test_sigkill_of_a_child_leaves_a_playable_file(xvfb: Xvfb, tmp_path: Path,
                                                    victim: str) -> None:
    window = ColourWindow(xvfb.display, 0, 0, *WINDOW_SIZE)
    recorder = BuiltinVideoBackend()
    try:
        recorder.start(CaptureTarget(display=xvfb.display, window_id=window.id),
                       video_output(tmp_path), VideoSettings(fps=FPS))
        time.sleep(1.5)
        victim_pid = recorder.pids[victim]
        assert victim_pid is not None
        os.kill(victim_pid, signal.SIGKILL)
        killed = now_ns()
        deadline = time.monotonic() + 2
        while recorder.alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not recorder.alive()
        result = recorder.stop()
    finally:
        window.close()
    assert result.error is not None and f"{victim} process died" in result.error
    frames = read_frames(tmp_path)
    assert result.frames == len(frames) > 0
    by_pts = {f["pts"]: f for f in frames}
    pts = decoded_pts(tmp_path / "video.mkv")
    assert pts == [f["pts"] for f in frames[:len(pts)]]
    assert by_pts[pts[-1]]["capture_time_ns"] >= killed - 500_000_000
    if victim == "grabber":  # the encoder finished the file: nothing is lost
        assert len(pts) == len(frames)


def test_window_resize_is_noted_and_closing_it_stops_grabbing(xvfb: Xvfb,
                                                               tmp_path: Path) -> None:
    window = ColourWindow(xvfb.display, 0, 0, *WINDOW_SIZE)
    recorder = BuiltinVideoBackend()
    recorder.start(CaptureTarget(display=xvfb.display, window_id=window.id),
                   video_output(tmp_path), VideoSettings(fps=FPS))
    time.sleep(0.3)
    window.resize(200, 100)
    time.sleep(0.1)
    window.close()
    closed = now_ns()
    time.sleep(1.0)
    assert recorder.alive()
    result = recorder.stop()
    assert result.error is None
    assert any("target window went away" in note for note in result.notes)
    assert any("resized to 200x100" in note and "kept recording 320x240" in note
               for note in result.notes)
    frames = read_frames(tmp_path)
    assert frames[-1]["capture_time_ns"] < closed + 100_000_000  # the event stops it at once


OWNER_SCRIPT = """
import sys, time
from pathlib import Path
from capture.video import CaptureTarget, VideoSettings
from capture.video.builtin import RING_SLOTS, BuiltinVideoBackend
from capture.session.writer import video_output

if __name__ == "__main__":
    recorder = BuiltinVideoBackend()
    recorder.start(CaptureTarget(display=sys.argv[1], window_id=int(sys.argv[2])),
                   video_output(Path(sys.argv[3])), VideoSettings(fps=30))
    print(recorder.pids["grabber"], recorder.pids["encoder"], flush=True)
    time.sleep(60)
"""


def test_sigkill_of_the_owner_lets_the_children_finish_the_file(xvfb: Xvfb,
                                                                 tmp_path: Path) -> None:
    window = ColourWindow(xvfb.display, 0, 0, *WINDOW_SIZE)
    script = tmp_path / "owner.py"
    script.write_text(OWNER_SCRIPT)
    session_dir = tmp_path / "session"
    owner = subprocess.Popen([sys.executable, str(script), xvfb.display, str(window.id),
                              str(session_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        children = [psutil.Process(int(pid)) for pid in owner.stdout.readline().split()]
        time.sleep(1.0)
        owner.kill()
        killed = now_ns()
        owner.wait()
        while not all(_exited(child) for child in children) and now_ns() - killed < 5e9:
            time.sleep(0.02)
        finished = now_ns()
        assert all(_exited(child) for child in children), "the children outlived their owner"
    finally:
        window.close()
        owner.stdout.close()  # type: ignore[union-attr]
    frames = read_frames(session_dir)
    pictures = decode_video(session_dir / "video.mkv")
    assert len(pictures) == len(frames)
    last = frames[-1]["capture_time_ns"]
    assert killed - 200_000_000 <= last <= killed + 600_000_000
    assert finished - killed < 2_000_000_000


def _exited(process: psutil.Process) -> bool:
    """Orphans are reaped by init whenever it gets to it: a zombie has exited."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True



def test_a_child_dying_while_paused_never_blocks_the_owner(xvfb: Xvfb, tmp_path: Path) -> None:
    window = ColourWindow(xvfb.display, 0, 0, *WINDOW_SIZE)
    recorder = BuiltinVideoBackend()
    try:
        recorder.start(CaptureTarget(display=xvfb.display, window_id=window.id),
                       video_output(tmp_path), VideoSettings(fps=FPS))
        recorder.set_capturing(False)
        time.sleep(0.2)
        grabber_pid = recorder.pids["grabber"]
        assert grabber_pid is not None
        os.kill(grabber_pid, signal.SIGKILL)
        time.sleep(0.1)
        begun = time.monotonic()
        recorder.set_capturing(True)
        result = recorder.stop()
        assert time.monotonic() - begun < 5
    finally:
        window.close()
    assert not recorder.alive()
    assert result.error is not None and "grabber process died" in result.error
    assert result.frames == len(read_frames(tmp_path)) <= 2
