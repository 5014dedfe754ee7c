"""ObsVideoBackend when things go wrong: OBS absent, wrong password, no clock script, OBS dying."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import pytest

from capture import formats
from capture.errors import CaptureError
from capture.journal import read_journal
from capture.session.writer import video_output
from capture.video import CaptureTarget, VideoSettings
from capture.video.obs.backend import (
    ABANDON_TIMEOUT_S,
    CLOCK_LOG,
    ObsVideoBackend,
    recover_frames_journal,
)
from capture.video.obs.client import ObsClient
from capture.video.obs.config import COLLECTION
from capture.video.obs.obs_clock_script import ALIVE_SUFFIX, LOG_SUFFIX, RECORDER_GONE_NS
from capture.video.obs.settings import ObsSettings
from capture.xserver import Xvfb
from tests.obs.harness import ObsInstance, free_port, obs_available

pytestmark = [pytest.mark.x11,
              pytest.mark.skipif(not obs_available(), reason="needs OBS Studio and Xvfb")]

FPS = 30
SIZE = (640, 360)
OBS_AFTER = ("clock_window",)
OBS_SIZE = SIZE


class ObsWithoutClockScript(ObsInstance):
    """OBS set up as `capture obs setup` would, except that its scene collection loads no script."""

    def write_config(self) -> None:
        super().write_config()
        path = self.config_dir / "basic" / "scenes" / f"{COLLECTION}.json"
        document = json.loads(path.read_text())
        document.pop("modules", None)
        path.write_text(json.dumps(document))






def target(xvfb: Xvfb, window_id: int) -> CaptureTarget:
    return CaptureTarget(display=xvfb.display, window_id=window_id)


def decodable_frames(path: Path) -> int:
    count = 0
    try:
        with av.open(str(path)) as container:
            for _ in container.decode(video=0):
                count += 1
    except av.error.FFmpegError:
        pass
    return count


def test_obs_not_running_is_reported_at_once(xvfb: Xvfb, tmp_path: Path) -> None:
    recorder = ObsVideoBackend(ObsSettings("127.0.0.1", free_port(), "secret-word"))
    started = time.monotonic()
    with pytest.raises(CaptureError, match="not running") as caught:
        recorder.start(target(xvfb, 1), video_output(tmp_path / "session"), VideoSettings(fps=FPS))
    assert time.monotonic() - started < 3
    assert "capture obs setup" in str(caught.value)
    assert "secret-word" not in str(caught.value)
    assert not recorder.alive()


def test_a_wrong_password_is_reported_without_it(obs: ObsInstance, xvfb: Xvfb,
                                                 clock_window: int, tmp_path: Path) -> None:
    recorder = ObsVideoBackend(ObsSettings(obs.host, obs.port, "not-the-password"))
    started = time.monotonic()
    with pytest.raises(CaptureError, match="password") as caught:
        recorder.start(target(xvfb, clock_window),
                       video_output(tmp_path / "session"), VideoSettings(fps=FPS))
    assert time.monotonic() - started < 5
    assert "not-the-password" not in str(caught.value)
    assert obs.password not in str(caught.value)
    assert "not-the-password" not in repr(recorder.settings)


def test_obs_stopping_the_recording_by_itself_ends_the_session_with_its_frames(
        obs: ObsInstance, xvfb: Xvfb, clock_window: int, tmp_path: Path) -> None:
    # What a full disk looks like from outside: OBS ends the recording on its own.
    recorder = ObsVideoBackend(ObsSettings(obs.host, obs.port, obs.password))
    session_dir = tmp_path / "session"
    recorder.start(target(xvfb, clock_window), video_output(session_dir), VideoSettings(fps=FPS))
    time.sleep(1.5)
    with ObsClient(obs.host, obs.port, obs.password) as other:
        other.stop_record()
    deadline = time.monotonic() + 5
    while recorder.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not recorder.alive()
    result = recorder.stop()
    assert result.error is not None and "by itself" in result.error
    records = list(read_journal(session_dir / formats.FRAMES_JOURNAL))
    assert len(records) == decodable_frames(session_dir / formats.VIDEO) > 0


def test_a_missing_clock_script_is_refused_and_obs_left_idle(xvfb: Xvfb, clock_window: int,
                                                              tmp_path: Path) -> None:
    with ObsWithoutClockScript(tmp_path / "obs", xvfb.display, fps=FPS, size=SIZE) as obs:
        recorder = ObsVideoBackend(ObsSettings(obs.host, obs.port, obs.password))
        with pytest.raises(CaptureError, match=r"clock script is not running.*capture obs setup"):
            recorder.start(target(xvfb, clock_window), video_output(tmp_path / "session"),
                           VideoSettings(fps=FPS))
        with ObsClient(obs.host, obs.port, obs.password) as client:
            deadline = time.monotonic() + 2   # OBS says active a moment after STOPPED
            while client.record_status()["outputActive"] and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not client.record_status()["outputActive"]


def test_obs_killed_mid_recording_keeps_the_video_and_its_frame_times(
        xvfb: Xvfb, clock_window: int, tmp_path: Path) -> None:
    with ObsInstance(tmp_path / "obs", xvfb.display, fps=FPS, size=SIZE) as obs:
        recorder = ObsVideoBackend(ObsSettings(obs.host, obs.port, obs.password))
        session_dir = tmp_path / "session"
        recorder.start(target(xvfb, clock_window),
                       video_output(session_dir), VideoSettings(fps=FPS))
        time.sleep(2.5)
        obs.kill()
        deadline = time.monotonic() + 3
        while recorder.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not recorder.alive()
        started = time.monotonic()
        result = recorder.stop()
        assert time.monotonic() - started < 10
    assert result.error is not None and "went away" in result.error
    video = session_dir / formats.VIDEO
    assert video.exists() and (session_dir / CLOCK_LOG).exists()
    records = list(read_journal(session_dir / formats.FRAMES_JOURNAL))
    assert len(records) == decodable_frames(video)
    assert len(records) > FPS
    assert all(r["capture_time_ns"] > 0 for r in records)
    (session_dir / formats.FRAMES_JOURNAL).unlink()     # as if capture had died too
    assert recover_frames_journal(video_output(session_dir)) == len(records)
    assert list(read_journal(session_dir / formats.FRAMES_JOURNAL)) == records


def test_obs_stops_recording_soon_after_its_recorder_is_killed(
        xvfb: Xvfb, clock_window: int, tmp_path: Path) -> None:
    # Fail closed: once the recorder is gone, nothing checks focus or consent any more, so OBS
    # must not go on recording the screen (its clock script watches the recorder's heartbeat).
    session_dir = tmp_path / "session"
    with ObsInstance(tmp_path / "obs", xvfb.display, fps=FPS, size=SIZE) as obs:
        recorder = subprocess.Popen(
            [sys.executable, "-m", "tests.obs.recorder_driver", obs.host, str(obs.port),
             obs.password, xvfb.display, str(clock_window), str(session_dir), str(FPS)],
            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
        try:
            assert recorder.stdout is not None and recorder.stdout.readline() == "recording\n"
            time.sleep(1.5)
            os.kill(recorder.pid, signal.SIGKILL)
            killed = time.monotonic()
        finally:
            if recorder.poll() is None:
                recorder.kill()
            recorder.wait()
            if recorder.stdout is not None:
                recorder.stdout.close()
        with ObsClient(obs.host, obs.port, obs.password, timeout_s=5.0) as client:
            assert client.record_status().get("outputActive"), "OBS was not recording"
            while client.record_status().get("outputActive"):
                assert time.monotonic() - killed < RECORDER_GONE_NS / 1e9 + 10, \
                    "OBS went on recording after its recorder was killed"
                time.sleep(0.2)
        stopped_after = time.monotonic() - killed
        log = session_dir / (formats.VIDEO + LOG_SUFFIX)
        deadline = time.monotonic() + 10     # the script closes the log right after the stop
        while not log.read_text().endswith("\n") or \
                json.loads(log.read_text().splitlines()[-1])[0] != "end":
            assert time.monotonic() < deadline, "the clock log was not closed"
            time.sleep(0.1)
    assert stopped_after >= RECORDER_GONE_NS / 1e9 - 1
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    watchdog = [item[1] for item in lines if item[0] == "watchdog"]
    assert len(watchdog) == 1 and lines[-1][0] == "end"
    assert watchdog[0]["host_ns"] - watchdog[0]["last_alive_ns"] > RECORDER_GONE_NS
    assert (session_dir / (formats.VIDEO + ALIVE_SUFFIX)).exists()
    # recovery rebuilds the timeline from what OBS wrote and removes the dead recorder's heartbeat
    notes = ObsVideoBackend.recover(video_output(session_dir))
    assert any("stopped the recording" in note for note in notes), notes
    assert not (session_dir / (formats.VIDEO + ALIVE_SUFFIX)).exists()
    records = list(read_journal(session_dir / formats.FRAMES_JOURNAL))
    assert 0 < len(records) == decodable_frames(session_dir / formats.VIDEO)


def test_a_start_that_hangs_fails_in_bounded_time_and_leaves_no_recording(
        xvfb: Xvfb, clock_window: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # OBS freezes (SIGSTOP) right after it accepted StartRecord, for longer than the start may
    # take, then carries on and starts that recording late: it must be stopped, not left running.
    with ObsInstance(tmp_path / "obs", xvfb.display, fps=FPS, size=SIZE) as obs:
        start_record = ObsClient.start_record
        frozen_s = 8.0

        def start_then_freeze(client: ObsClient) -> int:
            sent = start_record(client)
            os.kill(obs.pid, signal.SIGSTOP)
            threading.Timer(frozen_s, os.kill, (obs.pid, signal.SIGCONT)).start()
            return sent

        monkeypatch.setattr(ObsClient, "start_record", start_then_freeze)
        recorder = ObsVideoBackend(ObsSettings(obs.host, obs.port, obs.password),
                                   start_timeout_s=5.0)
        started = time.monotonic()
        with pytest.raises(CaptureError, match="did not start recording within 5 s") as caught:
            recorder.start(target(xvfb, clock_window), video_output(tmp_path / "session"),
                           VideoSettings(fps=FPS))
        elapsed = time.monotonic() - started
        monkeypatch.undo()
        assert elapsed < 5.0 + ABANDON_TIMEOUT_S + recorder.request_timeout_s + 2, elapsed
        assert "\n" not in str(caught.value) and "OBS is not recording now" in str(caught.value)
        assert not recorder.alive()
        with ObsClient(obs.host, obs.port, obs.password) as client:
            for _ in range(10):         # and it stays so
                assert not client.record_status()["outputActive"]
                time.sleep(0.3)
