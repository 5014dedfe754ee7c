"""A real OBS Studio for tests: fresh config under a temp HOME, its own Xvfb, a ready websocket.

Usage (the capture display is usually the game's Xvfb, e.g. the `xvfb` fixture's display)::

    from tests.obs.harness import ObsInstance, obs_available

    pytestmark = pytest.mark.skipif(not obs_available(), reason="needs OBS Studio and Xvfb")

    def test_something(tmp_path, xvfb):
        with ObsInstance(tmp_path / "obs", xvfb.display, fps=30) as obs:
            with ObsClient(obs.host, obs.port, obs.password) as client:
                client.start_record()
                ...
            # obs.record_dir holds the recordings; obs.log_text() is OBS's log

The config is written by `capture.video.obs.config.plan_setup` (the code `capture obs setup`
runs) with `capture_display`, into `root/home/.config/obs-studio`; OBS runs with HOME and
XDG_CONFIG_HOME pointing there, so the developer's own OBS settings are never touched.
`stop()` terminates OBS (kill after a timeout); `kill()` sends SIGKILL for fault tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from capture.errors import CaptureError
from capture.video.obs.client import ObsClient, ObsError
from capture.video.obs.config import (
    COLLECTION,
    PROFILE,
    SetupRequest,
    installed_obs_version,
    obs_config_dir,
    plan_setup,
)
from capture.xserver import Xvfb

START_TIMEOUT_S = 40.0
QT_VARIABLES_FROM_CV2 = ("QT_QPA_PLATFORM_PLUGIN_PATH", "QT_QPA_FONTDIR", "QT_PLUGIN_PATH")


def obs_available() -> bool:
    """True if OBS Studio and Xvfb are installed (tests that need them skip otherwise)."""
    return shutil.which("obs") is not None and shutil.which("Xvfb") is not None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ObsInstance:
    """OBS Studio started on its own Xvfb with a config made for `capture_display`."""

    def __init__(self, root: Path, capture_display: str, *, fps: int = 30,
                 size: tuple[int, int] = (1280, 720), port: int | None = None,
                 password: str = "test-password") -> None:
        self.root = Path(root)
        self.capture_display = capture_display
        self.fps = fps
        self.size = size
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.password = password
        self.home = self.root / "home"
        self.config_dir = obs_config_dir({"HOME": str(self.home)})
        self.record_dir = self.root / "recordings"
        self.scene = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self._xvfb: Xvfb | None = None
        self._stdout_path = self.root / "obs-stdout.log"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("OBS is not started")
        return self.proc.pid

    def write_config(self) -> None:
        """Write OBS's config for this instance (the same code path as `capture obs setup`)."""
        request = SetupRequest(port=self.port, password=self.password, record_dir=self.record_dir,
                               fps=self.fps, size=self.size,
                               capture_display=self.capture_display,
                               obs_version=installed_obs_version())
        plan = plan_setup(self.config_dir, request)
        plan.apply(include_shared=True)
        self.scene = plan.scene

    def start(self, *, wait: bool = True) -> ObsInstance:
        self.root.mkdir(parents=True, exist_ok=True)
        self.write_config()
        self._xvfb = Xvfb(1024, 768).start()
        # importing cv2 points Qt at its own plugins in os.environ; OBS then fails to start
        inherited = {k: v for k, v in os.environ.items() if k not in QT_VARIABLES_FROM_CV2}
        env = {**inherited, "DISPLAY": self._xvfb.display, "HOME": str(self.home),
               "XDG_CONFIG_HOME": str(self.home / ".config"), "LIBGL_ALWAYS_SOFTWARE": "1",
               "QT_QPA_PLATFORM": "xcb"}
        command = ["obs", "--multi", "--minimize-to-tray", "--disable-missing-files-check",
                   "--profile", PROFILE, "--collection", COLLECTION, "--scene", self.scene]
        with self._stdout_path.open("wb") as log:
            self.proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.root)
        if wait:
            try:
                self.wait_ready()
            except BaseException:
                self.stop()
                raise
        return self

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait until the websocket accepts our password and OBS answers requests."""
        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise CaptureError(f"OBS exited during start-up:\n{self.log_text()[-3000:]}")
            try:
                with ObsClient(self.host, self.port, self.password, timeout_s=2.0) as client:
                    client.version()
                    return
            except ObsError as exc:
                last_error = exc
                time.sleep(0.2)
        raise CaptureError(f"OBS's websocket was not ready after {timeout_s:g} s "
                           f"({last_error}):\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        """OBS's newest log file (or its console output if it wrote none)."""
        logs = sorted((self.config_dir / "logs").glob("*.txt"), key=lambda p: p.stat().st_mtime)
        if logs:
            return logs[-1].read_text(errors="replace")
        if self._stdout_path.exists():
            return self._stdout_path.read_text(errors="replace")
        return ""

    def stop(self, timeout_s: float = 10.0) -> None:
        """Terminate OBS (SIGKILL if it lingers), then its Xvfb."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._xvfb is not None:
            self._xvfb.stop()
            self._xvfb = None

    def kill(self) -> None:
        """SIGKILL OBS at once, as a crash would (its Xvfb stays up until stop())."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> ObsInstance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def busy_loops(count: int, max_s: float) -> Iterator[None]:
    """`count` processes spinning on a core each for the block, each ending by itself after
    `max_s` at the latest (the machine is shared: the load is bounded in time whatever the test
    does, even if this process is held up)."""
    # Each spinner is the Python process itself, so kill() ends it. (A `timeout` wrapper once
    # did this: killing the wrapper orphaned the spinner, which then spun for the rest of the
    # CI run and starved the tests after it.)
    spin = ("import time\n"
            f"end = time.monotonic() + {max_s:g}\n"
            "while time.monotonic() < end: pass")
    spinners = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


@pytest.fixture
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No OBS_WEBSOCKET_* variables and a config file path of our own (returned, not created)."""
    for variable in ("OBS_WEBSOCKET_HOST", "OBS_WEBSOCKET_PORT", "OBS_WEBSOCKET_PASSWORD"):
        monkeypatch.delenv(variable, raising=False)
    path = tmp_path / "capture-config.toml"
    monkeypatch.setenv("CAPTURE_CONFIG", str(path))
    return path
