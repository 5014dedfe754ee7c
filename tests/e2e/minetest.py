"""Launch a real Minetest (Debian's package) straight into a fresh creative world for tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

MINETEST = shutil.which("minetest") or "/usr/games/minetest"


def available() -> bool:
    return Path(MINETEST).exists()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_world(root: Path) -> tuple[Path, Path]:
    world = root / "world"
    world.mkdir(parents=True)
    (world / "world.mt").write_text(
        "gameid = minetest\nbackend = sqlite3\nplayer_backend = sqlite3\n"
        "auth_backend = sqlite3\nmod_storage_backend = sqlite3\n"
        "creative_mode = true\nenable_damage = false\n")
    (world / "map_meta.txt").write_text("mg_name = v7\nseed = 1234\n[end_of_params]\n")
    conf = root / "minetest.conf"
    conf.write_text(
        "screen_w = 640\nscreen_h = 480\nfullscreen = false\nenable_sound = false\n"
        "fps_max = 30\nfps_max_unfocused = 30\nviewing_range = 60\nenable_shaders = false\n"
        "enable_clouds = false\nsmooth_lighting = false\nmouse_sensitivity = 0.2\n"
        "show_welcome_message = false\n"
        # its built-in server: loopback only, and a free port so parallel runs never collide
        "bind_address = 127.0.0.1\n")
    return world, conf


class Minetest:
    """A running Minetest process; `wait_ready` returns once its player has joined and rendered."""

    def __init__(self, root: Path, display: str) -> None:
        self.root = root
        self.display = display
        self.log = root / "minetest.log"
        world, conf = write_world(root)
        home = root / "home"
        home.mkdir()
        env = {**os.environ, "DISPLAY": display, "HOME": str(home),
               "LIBGL_ALWAYS_SOFTWARE": "1"}
        self.proc = subprocess.Popen(
            [MINETEST, "--go", "--world", str(world), "--name", "tester", "--password", "",
             "--port", str(free_udp_port()),
             "--config", str(conf), "--logfile", str(self.log)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"minetest exited with {self.proc.returncode}; "
                                   f"log: {self.log.read_text()[-2000:]}")
            if self.log.exists() and "joins game" in self.log.read_text(errors="replace"):
                time.sleep(3.0)  # it renders its first frames a few seconds after joining
                return
            time.sleep(0.2)
        raise RuntimeError("minetest did not join its world in time")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
