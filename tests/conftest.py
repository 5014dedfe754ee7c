"""Shared fixtures: a private data dir and a real Xvfb server per test module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

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
