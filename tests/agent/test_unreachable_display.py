"""An X display that is not there: `capture record` and `capture agent` end in one plain line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from capture import consent
from capture.errors import CaptureError
from capture.inputs._xorg import open_display
from capture.video import CaptureTarget
from capture.video.builtin import resolve_target


def free_display() -> str:
    """A display number no X server listens on here."""
    number = next(n for n in range(871, 999) if not Path(f"/tmp/.X11-unix/X{n}").exists()
                  and not Path(f"/tmp/.X{n}-lock").exists())
    return f":{number}"


@pytest.mark.parametrize("name, words", [(free_display(), "Connection refused"),
                                         ("no-such-display", "Bad display name")])
def test_opening_a_missing_display_names_it(name: str, words: str) -> None:
    with pytest.raises(CaptureError) as err:
        open_display(name)
    assert f"X display {name} " in str(err.value) and words in str(err.value)
    with pytest.raises(CaptureError) as err:
        resolve_target(CaptureTarget(display=name))
    assert f"X display {name} " in str(err.value) and words in str(err.value)


@pytest.mark.parametrize("command", [
    ["record", "--game", "factorygame", "--duration", "2"],
    ["agent", "--no-browser"],
])
def test_commands_on_a_missing_display_fail_plainly(capture_home: Path, tmp_path: Path,
                                                    command: list[str]) -> None:
    consent.grant("alice", ["factorygame"], ["video", "keyboard", "mouse"])
    display = free_display()
    env = {**os.environ, "CAPTURE_HOME": str(capture_home), "DISPLAY": display,
           "CAPTURE_CONFIG": str(tmp_path / "none.toml")}
    done = subprocess.run([sys.executable, "-m", "capture", *command, "--display", display],
                          env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if "error" in x.lower()]
    assert f"cannot connect to X display {display} " in line
