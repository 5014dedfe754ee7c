"""End to end with OBS: real Minetest, XTEST script -> `capture record --backend obs` -> export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from capture import consent, formats
from capture.clock import now_ns
from capture.export import export_dataset
from capture.export.verify import verify_dataset
from capture.inputs.xtest import XTestInjector
from capture.session.manifest import read_manifest
from capture.session.reader import open_session
from capture.xserver import Xvfb
from tests.e2e.minetest import Minetest, available
from tests.e2e.test_record_minetest import _frames_where
from tests.obs.harness import ObsInstance, obs_available
from tests.x11windows import other_window, window_with_class

pytestmark = [pytest.mark.x11, pytest.mark.game, pytest.mark.slow,
              pytest.mark.skipif(not available(), reason="minetest is not installed"),
              pytest.mark.skipif(not obs_available(), reason="needs OBS Studio and Xvfb")]

FPS = 30
FRAME_NS = 1e9 / FPS


@pytest.fixture
def minetest(xvfb: Xvfb, tmp_path: Path) -> Iterator[Minetest]:
    game = Minetest(tmp_path / "minetest", xvfb.display)
    try:
        game.wait_ready()
        yield game
    finally:
        game.stop()


@pytest.fixture
def obs(xvfb: Xvfb, tmp_path: Path) -> Iterator[ObsInstance]:
    with ObsInstance(tmp_path / "obs", xvfb.display, fps=FPS, size=(1280, 720)) as instance:
        yield instance


def test_obs_recorded_actions_match_injected_script(xvfb: Xvfb, minetest: Minetest,
                                                     obs: ObsInstance, capture_home: Path,
                                                     tmp_path: Path) -> None:
    consent.grant("e2e-player", ["minetest"], ["video", "keyboard", "mouse"])
    out = tmp_path / "sessions"
    env = {**os.environ, "DISPLAY": xvfb.display, "CAPTURE_HOME": str(capture_home),
           "OBS_WEBSOCKET_PASSWORD": obs.password}
    proc = subprocess.Popen(
        [sys.executable, "-m", "capture", "record", "--game", "minetest", "--fps", str(FPS),
         "--duration", "12", "--out", str(out), "--wait", "20", "--backend", "obs",
         "--obs-host", obs.host, "--obs-port", str(obs.port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    other_display, other = other_window(xvfb.display, 700, 50)
    inject = XTestInjector(xvfb.display)
    try:
        assert proc.stderr is not None
        while not (line := proc.stderr.readline()).startswith("recording "):
            assert line, f"recorder exited before recording: {proc.wait()}"
        game_window = window_with_class(xvfb.display, "Minetest")
        inject.focus(game_window)
        time.sleep(1.0)  # OBS resumes a pause only after it stood 0.5 s (MIN_PAUSE_S)

        hold_start = now_ns()
        inject.key_down("w")
        time.sleep(1.0)
        inject.key_up("w")
        hold_end = now_ns()
        time.sleep(0.3)
        for _ in range(30):
            inject.move_relative(7, -3)
            time.sleep(0.01)
        time.sleep(0.3)
        click_time = now_ns()
        inject.click("left")
        time.sleep(0.3)

        inject.focus(other.id)          # OBS pauses: nothing from here may be kept
        time.sleep(0.3)
        away_start = now_ns()
        inject.tap("e", 0.2)
        for _ in range(10):
            inject.move_relative(50, 50)
            time.sleep(0.01)
        away_end = now_ns()
        time.sleep(0.5)
        inject.focus(game_window)
        time.sleep(0.5)
        for _ in range(20):
            inject.move_relative(-5, 2)
            time.sleep(0.01)
        time.sleep(0.3)
        inject.tap("a", 0.5)
        stdout, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
        inject.close()
        other_display.close()
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
    assert not ((times > away_start + 0.2e9) & (times < away_end)).any(), "frames while away"

    events = open_session(session_dir).events().to_pylist()
    away = [e for e in events if away_start <= e["t_ns"] <= away_end
            and e["kind"] not in ("focus_in", "focus_out")]
    assert away == []

    dataset = tmp_path / "dataset"
    export_dataset([session_dir], dataset)
    report = verify_dataset(dataset)
    assert report.ok, report.summary()
    data = pq.read_table(sorted((dataset / "data").glob("*/*.parquet")))
    deltas = np.stack(data.column("action.mouse_delta").to_numpy(zero_copy_only=False))
    assert deltas.sum(axis=0).tolist() == pytest.approx([30 * 7 - 20 * 5, -30 * 3 + 20 * 2])

    info = json.loads((dataset / "meta" / "info.json").read_text())
    key_names = info["features"]["action.keys_held"]["names"]
    button_names = info["features"]["action.mouse_buttons"]["names"]
    grid = _grid_times(data)

    held = _frames_where(data, "action.keys_held", key_names.index("w"))
    assert len(held) > 0
    assert abs(len(held) / FPS - (hold_end - hold_start) / 1e9) <= 2 / FPS + 0.02
    assert abs(grid[held[0]] - hold_start) <= FRAME_NS + 5e6
    assert np.all(np.diff(held) == 1), "the hold of 'w' is not one contiguous run of frames"

    clicked = _frames_where(data, "action.mouse_buttons", button_names.index("left"))
    assert len(clicked) >= 1
    assert abs(grid[clicked[0]] - click_time) <= FRAME_NS + 5e6


def _grid_times(data) -> np.ndarray:
    """Each exported frame's grid time: its episode's first capture time + frame_index / fps."""
    times = np.asarray(data.column("capture_time_ns").to_pylist(), dtype=np.int64)
    episodes = np.asarray(data.column("episode_index").to_pylist())
    indices = np.asarray(data.column("frame_index").to_pylist())
    grid = np.empty(len(times), dtype=np.float64)
    for episode in np.unique(episodes):
        rows = episodes == episode
        grid[rows] = times[rows][0] + indices[rows] * FRAME_NS
    return grid

