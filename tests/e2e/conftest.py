"""End-to-end fixtures: a real Minetest on the module's Xvfb."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.minetest import Minetest


@pytest.fixture
def minetest(xvfb, tmp_path: Path) -> Iterator[Minetest]:
    game = Minetest(tmp_path / "minetest", xvfb.display)
    try:
        game.wait_ready()
        yield game
    finally:
        game.stop()
