"""`capture demo` runs end to end from the CLI with no display, and its numbers add up."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from capture.export.verify import verify_dataset

pytestmark = [pytest.mark.x11, pytest.mark.slow]


def test_demo_records_exports_and_verifies(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "CAPTURE_HOME")}
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "capture", "demo", "--out", str(out),
                             "--duration", "12"], env=env, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stderr
    assert "verify    OK" in log
    mouse = re.search(r"mouse\s+sent \(([+-]\d+), ([+-]\d+)\) while focused; per-frame actions "
                      r"sum to \(([+-]\d+), ([+-]\d+)\)", log)
    assert mouse, log
    sent, recorded = mouse.groups()[:2], mouse.groups()[2:]
    assert sent == recorded and sent != ("+0", "+0")
    keys = re.search(r"keys\s+(\d+) presses sent while focused, (\d+) recorded; (\d+) inputs "
                     r"sent to another window, none kept", log)
    assert keys and keys.group(1) == keys.group(2) and int(keys.group(3)) > 0
    assert verify_dataset(out / "dataset").ok
    # the demo's synthetic consent stays in the demo's own data dir
    assert (out / "home" / "consent" / "ledger.jsonl").exists()
