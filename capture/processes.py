"""Stopping a child program we started: ask it to end, then kill it if it does not."""

from __future__ import annotations

import subprocess
from typing import Any


def stop_process(process: subprocess.Popen[Any], timeout_s: float = 5.0) -> None:
    """SIGTERM, wait up to `timeout_s`, then SIGKILL; always reaps it."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
