"""End to end on a real Xvfb with real Minetest: XTEST script -> `capture record` -> export."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from capture import consent
from capture.clock import now_ns
from capture.export import export_dataset
from capture.export.verify import verify_dataset
from capture.inputs.xtest import XTestInjector
from capture.session.manifest import read_manifest
from capture.session.reader import open_session
from tests.e2e.minetest import Minetest, available
from tests.x11windows import other_window, window_with_class

pytestmark = [pytest.mark.x11, pytest.mark.game, pytest.mark.slow,
              pytest.mark.skipif(not available(), reason="minetest is not installed")]

FPS = 30
FRAME_NS = 1e9 / FPS


@pytest.fixture
def minetest(xvfb, tmp_path: Path) -> Iterator[Minetest]:
    game = Minetest(tmp_path / "minetest", xvfb.display)
    try:
        game.wait_ready()
        yield game
    finally:
        game.stop()


def _frames_where(data, column: str, name_index: int) -> np.ndarray:
    matrix = np.stack(data.column(column).to_numpy(zero_copy_only=False))
    return np.flatnonzero(matrix[:, name_index])


def test_recorded_actions_match_injected_script(xvfb, minetest, capture_home, tmp_path) -> None:
    consent.grant("e2e-player", ["minetest"], ["video", "keyboard", "mouse"])
    out = tmp_path / "sessions"
    env = {**os.environ, "DISPLAY": xvfb.display, "CAPTURE_HOME": str(capture_home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "capture", "record", "--game", "minetest", "--fps", str(FPS),
         "--duration", "14", "--out", str(out), "--wait", "20"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    other_display, other = other_window(xvfb.display, 700, 50)
    inject = XTestInjector(xvfb.display)
    try:
        assert proc.stderr is not None
        while not (line := proc.stderr.readline()).startswith("recording "):
            assert line, f"recorder exited before recording: {proc.wait()}"
        game_window = window_with_class(xvfb.display, "Minetest")
        inject.focus(game_window)
        time.sleep(0.5)

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
        inject.wheel(2)
        time.sleep(0.3)

        # Another window takes focus: nothing typed or moved there may be kept.
        inject.focus(other.id)
        time.sleep(0.3)
        away_start = now_ns()
        inject.tap("e", 0.2)
        for _ in range(10):
            inject.move_relative(50, 50)
            time.sleep(0.01)
        inject.click("right")
        away_end = now_ns()
        time.sleep(0.3)
        inject.focus(game_window)
        time.sleep(0.4)
        for _ in range(20):
            inject.move_relative(-5, 2)
            time.sleep(0.01)
        time.sleep(0.3)
        inject.tap("a", 0.5)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        inject.close()
        other_display.close()
    assert proc.returncode == 0, stderr
    session_dir = Path(stdout.strip().splitlines()[-1])
    manifest = read_manifest(session_dir)
    assert manifest.status == "complete"
    assert manifest.qa is not None and manifest.qa.frames > 5 * FPS

    events = open_session(session_dir).events().to_pylist()
    away = [e for e in events if away_start <= e["t_ns"] <= away_end
            and e["kind"] not in ("focus_in", "focus_out")]
    assert away == [], f"input recorded while another window had focus: {away[:5]}"
    assert not any(e.get("key") == "e" for e in events)

    dataset = tmp_path / "dataset"
    export_dataset([session_dir], dataset)
    report = verify_dataset(dataset)
    assert report.ok, report.summary()
    data = pq.read_table(sorted((dataset / "data").glob("*/*.parquet")))
    deltas = np.stack(data.column("action.mouse_delta").to_numpy(zero_copy_only=False))
    assert deltas.sum(axis=0).tolist() == pytest.approx([30 * 7 - 20 * 5, -30 * 3 + 20 * 2])
    wheel = np.stack(data.column("action.mouse_wheel").to_numpy(zero_copy_only=False))
    assert wheel[:, 0].sum() == pytest.approx(2)

    import json
    info = json.loads((dataset / "meta" / "info.json").read_text())
    key_names = info["features"]["action.keys_held"]["names"]
    button_names = info["features"]["action.mouse_buttons"]["names"]
    times = np.asarray(data.column("capture_time_ns").to_pylist(), dtype=np.int64)
    starts = times[0] + np.round(np.asarray(data.column("frame_index").to_pylist()) * FRAME_NS)

    held = _frames_where(data, "action.keys_held", key_names.index("w"))
    assert len(held) > 0
    held_s = len(held) / FPS
    assert abs(held_s - (hold_end - hold_start) / 1e9) <= 2 / FPS + 0.02
    assert abs(starts[held[0]] - hold_start) <= FRAME_NS + 5e6
    assert np.all(np.diff(held) == 1), "the hold of 'w' is not one contiguous run of frames"

    clicked = _frames_where(data, "action.mouse_buttons", button_names.index("left"))
    assert len(clicked) >= 1
    assert abs(starts[clicked[0]] - click_time) <= FRAME_NS + 5e6
    assert len(_frames_where(data, "action.mouse_buttons", button_names.index("right"))) == 0
