"""A private Xvfb X server for the demo, tests and benchmarks (started and stopped by us)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from capture.errors import CaptureError
from capture.processes import stop_process


class Xvfb:
    """Start `Xvfb` on a free display number; use as a context manager."""

    def __init__(self, width: int = 1280, height: int = 720, depth: int = 24) -> None:
        self.size = (width, height, depth)
        self.proc: subprocess.Popen[bytes] | None = None
        self.display = ""

    def start(self) -> Xvfb:
        exe = shutil.which("Xvfb")
        if exe is None:
            raise CaptureError("Xvfb is not installed (Debian/Ubuntu: apt-get install xvfb)")
        read_fd, write_fd = os.pipe()
        w, h, d = self.size
        self.proc = subprocess.Popen(
            [exe, "-displayfd", str(write_fd), "-screen", "0", f"{w}x{h}x{d}",
             "+extension", "GLX", "+extension", "RECORD", "+extension", "XInputExtension",
             "-nolisten", "tcp", "-noreset"],
            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            number = pipe.readline().strip()
        if not number:
            self.stop()
            raise CaptureError("Xvfb did not start")
        self.display = f":{number}"
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 10.0) -> None:
        from Xlib import display as xdisplay

        deadline = time.monotonic() + timeout
        while True:
            try:
                xdisplay.Display(self.display).close()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise CaptureError(f"Xvfb on {self.display} did not answer") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        self.proc = None

    def __enter__(self) -> Xvfb:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        return {**os.environ, "DISPLAY": self.display}


def socket_path(display: str) -> Path:
    return Path("/tmp/.X11-unix") / f"X{display.lstrip(':').split('.')[0]}"
