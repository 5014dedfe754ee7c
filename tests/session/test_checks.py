"""Record-time checks on real encoded videos: a visible game passes, a black capture does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from capture.session.manifest import read_manifest
from tests.factories import build_session, gameplay_script


def _check(session_dir: Path, name: str) -> dict:
    qa = read_manifest(session_dir).qa
    assert qa is not None
    return next(c.to_dict() for c in qa.checks if c.name == name)


def test_a_visible_game_passes_and_a_black_capture_fails(tmp_path: Path) -> None:
    visible = build_session(tmp_path / "a", gameplay_script(seconds=6))
    black = build_session(tmp_path / "b", gameplay_script(
        seconds=6, painter=lambda _tag, w, h: np.zeros((h, w, 3), dtype=np.uint8)))
    assert _check(visible, "game_visible")["ok"] is True
    assert _check(visible, "game_visible")["value"] == "4/5"  # frame 0 is one flat colour
    assert _check(black, "game_visible")["ok"] is False
    assert "black" in _check(black, "game_visible")["detail"]
    assert _check(visible, "input_activity")["ok"] is True
    assert _check(visible, "length")["ok"] is True
