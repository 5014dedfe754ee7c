"""Shared fixtures: a private data dir, a real Xvfb server per test module, the demo game."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from capture.demo.game import WINDOW_CLASS
from capture.inputs import x11window
from capture.xserver import Xvfb


@pytest.fixture
def capture_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "capture-home"
    home.mkdir()
    monkeypatch.setenv("CAPTURE_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def xvfb() -> Iterator[Xvfb]:
    with Xvfb() as server:
        old = os.environ.get("DISPLAY")
        os.environ["DISPLAY"] = server.display
        try:
            yield server
        finally:
            if old is None:
                os.environ.pop("DISPLAY", None)
            else:
                os.environ["DISPLAY"] = old


@pytest.fixture
def demo_game(xvfb) -> Iterator[int]:
    from Xlib import display as xdisplay

    proc = subprocess.Popen([sys.executable, "-m", "capture.demo.game", "--size", "320x240"],
                            env={**os.environ, "DISPLAY": xvfb.display})
    d = xdisplay.Display(xvfb.display)
    try:
        deadline = time.monotonic() + 15
        window = None
        while window is None and time.monotonic() < deadline:
            found = x11window.find_window(d, WINDOW_CLASS)  # survives windows that vanish
            window = found[0] if found else None
            time.sleep(0.1)
        assert window is not None, "demo game window did not appear"
        yield window
    finally:
        d.close()
        proc.terminate()
        proc.wait(10)
