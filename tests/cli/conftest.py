"""Fixtures for the command-line tests: real, small finalised sessions of a chosen player."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.factories import SessionScript, build_session, frame_times

_serial = itertools.count(1)
MakeSession = Callable[..., Path]


@pytest.fixture
def make_session(capture_home: Path) -> MakeSession:
    """make_session(player, game, root=None) -> a finalised 3-frame session in the sessions dir
    (or under `root`, unregistered)."""

    def make(player: str, game: str, root: Path | None = None) -> Path:
        times, _ = frame_times(3, 30)
        serial = next(_serial)
        script = SessionScript(capture_times_ns=times, player=player, game=game,
                               session_id=f"20250301T1200{serial:02d}Z-{game.lower()}-{serial:06x}")
        return build_session(root or capture_home / "sessions", script)

    return make
