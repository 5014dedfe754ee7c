"""End to end on a real Xvfb with real Minetest: XTEST script -> `capture record` -> export."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from capture import consent
from capture.session.manifest import read_manifest
from tests.e2e.driver import FPS, check_recording, play
from tests.e2e.minetest import available

pytestmark = [pytest.mark.x11, pytest.mark.game, pytest.mark.slow,
              pytest.mark.skipif(not available(), reason="minetest is not installed")]


def test_recorded_actions_match_injected_script(xvfb, minetest, capture_home, tmp_path) -> None:
    consent.grant("e2e-player", ["minetest"], ["video", "keyboard", "mouse"])
    env = {**os.environ, "DISPLAY": xvfb.display, "CAPTURE_HOME": str(capture_home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "capture", "record", "--game", "minetest", "--fps", str(FPS),
         "--duration", "14", "--out", str(tmp_path / "sessions"), "--wait", "20"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    marks, stdout, stderr = play(proc, xvfb.display, settle_s=0.5, wheel=True, timeout_s=60)
    assert proc.returncode == 0, stderr
    session_dir = Path(stdout.strip().splitlines()[-1])
    manifest = read_manifest(session_dir)
    assert manifest.status == "complete"
    assert manifest.qa is not None and manifest.qa.frames > 5 * FPS

    data = check_recording(session_dir, marks, tmp_path / "dataset")
    wheel = np.stack(data.column("action.mouse_wheel").to_numpy(zero_copy_only=False))
    assert wheel[:, 0].sum() == pytest.approx(2)
