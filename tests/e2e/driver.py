"""The scripted Minetest session both end-to-end tests play, and the checks they share."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from capture.clock import now_ns
from capture.export import export_dataset
from capture.export.verify import verify_dataset
from capture.inputs.xtest import XTestInjector
from capture.session.reader import open_session
from tests.x11windows import other_window, window_with_class

FPS = 30
FRAME_NS = 1e9 / FPS
MOUSE_SUM = [30 * 7 - 20 * 5, -30 * 3 + 20 * 2]  # what the script moves while the game has focus


@dataclass
class Marks:
    """Host-clock times of what the script did."""

    hold_start: int = 0
    hold_end: int = 0
    click: int = 0
    away_start: int = 0
    away_end: int = 0


def play(proc: subprocess.Popen[str], display: str, *, settle_s: float, wheel: bool,
         timeout_s: float) -> tuple[Marks, str, str]:
    """Wait for the recorder, then: hold W 1 s, turn, click, (wheel), type and move in another
    window, come back, turn, tap A. Returns the marks and the recorder's stdout and stderr."""
    marks = Marks()
    other_display, other = other_window(display, 700, 50)
    inject = XTestInjector(display)
    try:
        assert proc.stderr is not None
        while not (line := proc.stderr.readline()).startswith("recording "):
            assert line, f"recorder exited before recording: {proc.wait()}"
        game_window = window_with_class(display, "Minetest")
        inject.focus(game_window)
        time.sleep(settle_s)
        marks.hold_start = now_ns()
        inject.key_down("w")
        time.sleep(1.0)
        inject.key_up("w")
        marks.hold_end = now_ns()
        time.sleep(0.3)
        for _ in range(30):
            inject.move_relative(7, -3)
            time.sleep(0.01)
        time.sleep(0.3)
        marks.click = now_ns()
        inject.click("left")
        time.sleep(0.3)
        if wheel:
            inject.wheel(2)
            time.sleep(0.3)
        # Another window takes focus: nothing typed or moved there may be kept.
        inject.focus(other.id)
        time.sleep(0.3)
        marks.away_start = now_ns()
        inject.tap("e", 0.2)
        for _ in range(10):
            inject.move_relative(50, 50)
            time.sleep(0.01)
        inject.click("right")
        marks.away_end = now_ns()
        time.sleep(0.5)
        inject.focus(game_window)
        time.sleep(0.5)
        for _ in range(20):
            inject.move_relative(-5, 2)
            time.sleep(0.01)
        time.sleep(0.3)
        inject.tap("a", 0.5)
        stdout, stderr = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
        inject.close()
        other_display.close()
    return marks, stdout, stderr


def frames_where(data: pa.Table, column: str, name_index: int) -> np.ndarray:
    matrix = np.stack(data.column(column).to_numpy(zero_copy_only=False))
    return np.flatnonzero(matrix[:, name_index])


def grid_times(data: pa.Table) -> np.ndarray:
    """Each exported frame's grid time: its episode's first capture time + frame_index / fps."""
    times = np.asarray(data.column("capture_time_ns").to_pylist(), dtype=np.int64)
    episodes = np.asarray(data.column("episode_index").to_pylist())
    indices = np.asarray(data.column("frame_index").to_pylist())
    grid = np.empty(len(times), dtype=np.float64)
    for episode in np.unique(episodes):
        rows = episodes == episode
        grid[rows] = times[rows][0] + indices[rows] * FRAME_NS
    return grid


def check_recording(session_dir: Path, marks: Marks, dataset: Path) -> pa.Table:
    """What both backends must get right: nothing kept while away, the dataset verifies, the
    mouse sums, the W hold's length and start, and the click lie within one frame."""
    events = open_session(session_dir).events().to_pylist()
    away = [e for e in events if marks.away_start <= e["t_ns"] <= marks.away_end
            and e["kind"] not in ("focus_in", "focus_out")]
    assert away == [], f"input recorded while another window had focus: {away[:5]}"
    assert not any(e.get("key") == "e" for e in events)

    export_dataset([session_dir], dataset)
    report = verify_dataset(dataset)
    assert report.ok, report.summary()
    data = pq.read_table(sorted((dataset / "data").glob("*/*.parquet")))
    deltas = np.stack(data.column("action.mouse_delta").to_numpy(zero_copy_only=False))
    assert deltas.sum(axis=0).tolist() == pytest.approx(MOUSE_SUM)

    info = json.loads((dataset / "meta" / "info.json").read_text())
    key_names = info["features"]["action.keys_held"]["names"]
    button_names = info["features"]["action.mouse_buttons"]["names"]
    grid = grid_times(data)
    held = frames_where(data, "action.keys_held", key_names.index("w"))
    assert len(held) > 0
    assert abs(len(held) / FPS - (marks.hold_end - marks.hold_start) / 1e9) <= 2 / FPS + 0.02
    assert abs(grid[held[0]] - marks.hold_start) <= FRAME_NS + 5e6
    assert np.all(np.diff(held) == 1), "the hold of 'w' is not one contiguous run of frames"
    clicked = frames_where(data, "action.mouse_buttons", button_names.index("left"))
    assert len(clicked) >= 1
    assert abs(grid[clicked[0]] - marks.click) <= FRAME_NS + 5e6
    assert len(frames_where(data, "action.mouse_buttons", button_names.index("right"))) == 0
    return data
