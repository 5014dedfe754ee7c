"""End to end with OBS: real Minetest, XTEST script -> `capture record --backend obs` -> export."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from capture import consent, formats
from capture.session.manifest import read_manifest
from capture.session.reader import open_session
from capture.xserver import Xvfb
from tests.e2e.driver import FPS, check_recording, play
from tests.e2e.minetest import Minetest, available
from tests.obs.harness import ObsInstance, obs_available

pytestmark = [pytest.mark.x11, pytest.mark.game, pytest.mark.slow,
              pytest.mark.skipif(not available(), reason="minetest is not installed"),
              pytest.mark.skipif(not obs_available(), reason="needs OBS Studio and Xvfb")]




def test_obs_recorded_actions_match_injected_script(xvfb: Xvfb, minetest: Minetest,
                                                     obs: ObsInstance, capture_home: Path,
                                                     tmp_path: Path) -> None:
    consent.grant("e2e-player", ["minetest"], ["video", "keyboard", "mouse"])
    env = {**os.environ, "DISPLAY": xvfb.display, "CAPTURE_HOME": str(capture_home),
           "OBS_WEBSOCKET_PASSWORD": obs.password}
    proc = subprocess.Popen(
        [sys.executable, "-m", "capture", "record", "--game", "minetest", "--fps", str(FPS),
         "--duration", "12", "--out", str(tmp_path / "sessions"), "--wait", "20",
         "--backend", "obs", "--obs-host", obs.host, "--obs-port", str(obs.port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # OBS resumes a pause only after it stood 0.5 s (MIN_PAUSE_S): settle 1 s after focusing.
    marks, stdout, stderr = play(proc, xvfb.display, settle_s=1.0, wheel=False, timeout_s=90)
    assert proc.returncode == 0, stderr
    assert obs.password not in stdout + stderr
    session_dir = Path(stdout.strip().splitlines()[-1])
    manifest = read_manifest(session_dir)
    assert manifest.status == "complete", manifest.error
    assert manifest.video_backend == "obs"
    assert manifest.qa is not None
    assert any("renderSkippedFrames" in n for n in manifest.qa.notes)
    assert obs.password not in (session_dir / formats.MANIFEST).read_text()
    assert manifest.qa.frames > 5 * FPS

    frames = open_session(session_dir).frames().to_pylist()
    times = np.array([f["capture_time_ns"] for f in frames])
    assert np.all(times > 0) and np.all(np.diff(times) >= 0)
    assert not ((times > marks.away_start + 0.2e9) & (times < marks.away_end)).any(), \
        "frames while away"
    check_recording(session_dir, marks, tmp_path / "dataset")
