"""Shared fixtures: a private data dir, a real Xvfb server per test module, the demo game."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from capture.demo.game import WINDOW_CLASS
from capture.inputs import x11window
from capture.xserver import Xvfb

pytest_plugins = ["pytester", "tests.process_leaks"]


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


def _module_setting(request: pytest.FixtureRequest, name: str, default: Any) -> Any:
    return getattr(request.module, name, default)


@pytest.fixture(scope="module")
def clock_window(request: pytest.FixtureRequest, xvfb: Xvfb) -> Iterator[int]:
    """A window drawing the host clock (capture.clockface) over the module's OBS_SIZE area."""
    from capture.clockface import running_clockface

    with running_clockface(xvfb.display,
                           size=_module_setting(request, "OBS_SIZE", (1280, 720))) as window:
        yield window


@pytest.fixture(scope="module")
def obs(request: pytest.FixtureRequest,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real OBS Studio for the test module, set up by our own code in a temporary HOME.

    It captures the display of the module's OBS_DISPLAY fixture (default: xvfb) at its OBS_FPS
    (30) and OBS_SIZE (1280x720); fixtures the module names in OBS_AFTER (e.g. clock_window)
    are set up first. Each module gets its own OBS.
    """
    from tests.obs.harness import ObsInstance

    for name in _module_setting(request, "OBS_AFTER", ()):
        request.getfixturevalue(name)
    display = request.getfixturevalue(_module_setting(request, "OBS_DISPLAY", "xvfb"))
    with ObsInstance(tmp_path_factory.mktemp("obs"),
                     display if isinstance(display, str) else display.display,
                     fps=_module_setting(request, "OBS_FPS", 30),
                     size=_module_setting(request, "OBS_SIZE", (1280, 720))) as instance:
        yield instance
