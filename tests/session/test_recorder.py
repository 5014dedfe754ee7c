"""The recorder on Xvfb with the bundled game: consent refusal, clean stop, crash recovery."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from capture import consent
from capture.clock import now_ns
from capture.demo.game import WINDOW_CLASS
from capture.inputs.xtest import XTestInjector
from capture.session import writer
from capture.session.manifest import read_manifest
from capture.session.reader import needs_recovery, open_session

pytestmark = [pytest.mark.x11]


def _record(xvfb, home: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "DISPLAY": xvfb.display, "CAPTURE_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-m", "capture", "record", "--game", WINDOW_CLASS, "--out", str(out),
         "--wait", "10", *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


def _wait_for_recording(proc: subprocess.Popen[str], timeout_s: float = 30) -> Path:
    """Block until the recorder says it is recording (input and video both started)."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"recorder exited before recording: {proc.wait()}")
        if line.startswith("recording "):
            return Path(line.rsplit(" into ", 1)[1].strip())
    raise AssertionError("recording did not start")


def test_record_without_consent_writes_nothing(xvfb, capture_home, tmp_path) -> None:
    out = tmp_path / "out"
    proc = _record(xvfb, capture_home, out, "--duration", "2")
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 3
    assert "no consent" in stderr.lower() and WINDOW_CLASS in stderr
    assert not out.exists()
    assert not (capture_home / "sessions").exists()


def test_record_with_consent_lacking_a_kind_writes_nothing(xvfb, capture_home, tmp_path) -> None:
    consent.grant("p1", [WINDOW_CLASS], ["video", "keyboard"])
    out = tmp_path / "out"
    proc = _record(xvfb, capture_home, out, "--duration", "2")
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 3
    assert "mouse" in stderr
    assert not out.exists()


def test_sigterm_finalises_cleanly(xvfb, demo_game, capture_home, tmp_path) -> None:
    consent.grant("p1", [WINDOW_CLASS], ["video", "keyboard", "mouse"])
    out = tmp_path / "out"
    proc = _record(xvfb, capture_home, out)
    session_dir = _wait_for_recording(proc)
    inject = XTestInjector(xvfb.display)
    inject.focus(demo_game)
    time.sleep(0.5)
    inject.tap("d", 0.2)
    time.sleep(1.0)
    inject.close()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert Path(stdout.strip().splitlines()[-1]) == session_dir
    manifest = read_manifest(session_dir)
    assert manifest.status == "complete"
    assert manifest.clock.end is not None
    assert manifest.qa is not None
    assert manifest.qa.input_counts.get("key_press") == 1
    session = open_session(session_dir)
    assert session.frames().num_rows == manifest.qa.frames > 10


def test_sigkill_then_recover_loses_at_most_250ms(xvfb, demo_game, capture_home,
                                                   tmp_path) -> None:
    consent.grant("p1", [WINDOW_CLASS], ["video", "keyboard", "mouse"])
    out = tmp_path / "out"
    proc = _record(xvfb, capture_home, out)
    session_dir = _wait_for_recording(proc)
    inject = XTestInjector(xvfb.display)
    inject.focus(demo_game)
    time.sleep(0.5)
    sent: list[int] = []
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        inject.move_relative(1, 0)
        sent.append(now_ns())
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    kill_time = now_ns()
    inject.close()
    time.sleep(0.5)  # let orphaned children notice and exit

    assert needs_recovery(session_dir)
    with pytest.raises(Exception, match="not finalised"):
        open_session(session_dir)
    env = {**os.environ, "CAPTURE_HOME": str(capture_home)}
    result = subprocess.run([sys.executable, "-m", "capture", "sessions", "recover",
                             str(session_dir)], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(session_dir)
    assert manifest.status == "recovered"
    session = open_session(session_dir)
    motions = [e["t_ns"] for e in session.events().to_pylist() if e["kind"] == "motion"]
    assert motions, "no motion survived the crash"
    last_sent = max(t for t in sent if t <= kill_time)
    assert last_sent - max(motions) <= 250_000_000, "more than 250 ms of input lost"
    frames = session.frames()
    assert frames.num_rows == writer._count_decodable_frames(session.video_path) > 10
    last_frame = frames.column("capture_time_ns")[-1].as_py()
    assert kill_time - last_frame <= 750_000_000
