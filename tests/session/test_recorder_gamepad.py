"""A gamepad (SDL virtual controller) recorded with the game and exported as per-frame columns."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from capture import consent
from capture.demo.game import WINDOW_CLASS
from capture.export import export_dataset
from capture.inputs import EventSink, gamepad
from capture.inputs.xtest import XTestInjector
from capture.session.manifest import read_manifest
from capture.session.recorder import RecordOptions, record
from tests.inputs.test_gamepad import FULL, VirtualPad

pytestmark = [pytest.mark.x11]
FPS = 30


def test_gamepad_input_reaches_the_dataset(xvfb, demo_game, capture_home, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    consent.grant("p1", [WINDOW_CLASS], ["video", "keyboard", "mouse", "gamepad"])
    started_captures: list[gamepad.GamepadCapture] = []

    class PluggablePads(gamepad.GamepadCapture):
        """The real capture; the test only learns which instance to plug a virtual pad into."""

        def start(self, sink: EventSink) -> None:
            super().start(sink)
            started_captures.append(self)

    monkeypatch.setattr(gamepad, "GamepadCapture", PluggablePads)
    with XTestInjector(xvfb.display) as inject:
        inject.focus(demo_game)
    started = threading.Event()
    result: dict[str, Path] = {}
    opts = RecordOptions(game=WINDOW_CLASS, fps=FPS, out=tmp_path / "out",
                         scope=frozenset({"video", "keyboard", "mouse", "gamepad"}),
                         display=xvfb.display, player="p1")
    stop = threading.Event()
    thread = threading.Thread(target=lambda: result.update(session=record(
        opts, stop=stop, say=lambda _m: None, on_started=lambda _p: started.set())))
    thread.start()
    try:
        assert started.wait(15)
        deadline = time.monotonic() + 5
        while not started_captures and time.monotonic() < deadline:
            time.sleep(0.01)
        pad = VirtualPad(started_captures[0], name="E2E Pad")
        time.sleep(0.4)
        pad.button("a", True)
        time.sleep(0.5)
        pad.button("a", False)
        pad.axis("left_x", FULL // 2)
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()

    pad_info = read_manifest(result["session"]).backend.input.gamepad
    assert pad_info is not None
    devices = pad_info.details["devices"]
    assert [d["name"] for d in devices] == ["E2E Pad"]
    dataset = tmp_path / "dataset"
    export_dataset([result["session"]], dataset)
    info = json.loads((dataset / "meta" / "info.json").read_text())
    data = pq.read_table(sorted((dataset / "data").glob("*/*.parquet")))
    buttons = np.stack(data.column("action.gamepad_buttons").to_numpy(zero_copy_only=False))
    held = np.flatnonzero(buttons[:, info["features"]["action.gamepad_buttons"]["names"]
                                  .index("a")])
    assert abs(len(held) - 0.5 * FPS) <= 2, len(held)
    assert np.all(np.diff(held) == 1)
    axes = np.stack(data.column("action.gamepad_axes").to_numpy(zero_copy_only=False))
    leftx = axes[:, info["features"]["action.gamepad_axes"]["names"].index("left_x")]
    # moved right after the button's release (how soon it shows depends on the machine's load:
    # SDL polls the pad), then held until the stop, whose synthetic re-centring the frames
    # captured after the stop request carry
    after = leftx[held[-1] + 1:]
    moved = np.flatnonzero(after > 0.25)
    assert moved.size and moved[0] <= 0.3 * FPS, after
    centred = np.flatnonzero(after[moved[0]:] == 0)
    assert centred.size and 1 <= after.size - moved[0] - centred[0] <= 0.3 * FPS, after
    assert after[moved[0]:moved[0] + centred[0]] == pytest.approx(0.5, abs=0.01), after
    assert np.all(after[moved[0] + centred[0]:] == 0), after
    assert leftx[-1] == 0
    assert leftx[: held[0]].max() == 0
