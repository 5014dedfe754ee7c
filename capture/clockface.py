"""Ground-truth clock: a window drawing the host clock as Gray-coded blocks, and its decoder."""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from capture.clock import now_ns
from capture.processes import stop_process

BLOCK = 32                 # block edge in px: 2x2 H.264 macroblocks, so blur never reaches a centre
COLUMNS = 16
ROWS = 3
ORIGIN = (16, 16)          # top-left of the strip inside the window, on the macroblock grid
VALUE_BITS = 40
CHECK_BITS = 8
START_TIMEOUT_S = 30.0     # for the clock window to show up (it prints its id)
UNIT_NS = 100_000          # the drawn value counts 100 µs steps: 40 bits last 3.5 years of uptime
WRAP_NS = (1 << VALUE_BITS) * UNIT_NS
STRIP_SIZE = (COLUMNS * BLOCK, ROWS * BLOCK)
_DARK, _LIGHT = 64.0, 192.0  # block means between these are unreadable (mid-transition or blurred)
_BACKGROUND = 0x303030


def _check_byte(value: int) -> int:
    return zlib.crc32(value.to_bytes(VALUE_BITS // 8, "little")) & 0xFF


def clock_bits(t_ns: int) -> list[bool]:
    """The 48 block states (True = white) that show host time `t_ns`, bit 0 first."""
    value = (t_ns // UNIT_NS) % (1 << VALUE_BITS)
    gray = value ^ (value >> 1)
    word = gray | (_check_byte(value) << VALUE_BITS)
    return [bool((word >> bit) & 1) for bit in range(VALUE_BITS + CHECK_BITS)]


def block_rect(bit: int) -> tuple[int, int, int, int]:
    """x, y, width, height of block `bit` inside the window."""
    row, column = divmod(bit, COLUMNS)
    return ORIGIN[0] + column * BLOCK, ORIGIN[1] + row * BLOCK, BLOCK, BLOCK


def render_clock_rgb(t_ns: int, size: tuple[int, int] = (640, 360)) -> np.ndarray:
    """An RGB picture of the clock window at host time `t_ns` (for tests without an X server)."""
    width, height = size
    image = np.full((height, width, 3), 0x30, dtype=np.uint8)
    for bit, white in enumerate(clock_bits(t_ns)):
        x, y, w, h = block_rect(bit)
        image[y:y + h, x:x + w] = 255 if white else 0
    return image


def decode_clock(frame_rgb: np.ndarray, *, origin: tuple[int, int] = ORIGIN,
                 near_ns: int | None = None) -> int | None:
    """The host time (ns) drawn in `frame_rgb` (H x W x 3 or 4), or None if it cannot be read.

    Returns the middle of the drawn 100 µs step. The drawn value wraps every WRAP_NS; pass
    `near_ns` (e.g. the frame's capture time) to get the unwrapped time closest to it.
    """
    x0, y0 = origin
    width, height = STRIP_SIZE
    strip = frame_rgb[y0:y0 + height, x0:x0 + width, :3]
    if strip.shape[:2] != (height, width):
        return None
    inset = BLOCK // 4
    blocks = strip.reshape(ROWS, BLOCK, COLUMNS, BLOCK, 3)[:, inset:-inset, :, inset:-inset]
    levels = blocks.mean(axis=(1, 3, 4), dtype=np.float64).reshape(-1)
    if np.any((levels > _DARK) & (levels < _LIGHT)):
        return None
    word = sum(1 << bit for bit, level in enumerate(levels) if level >= 128)
    gray = word & ((1 << VALUE_BITS) - 1)
    value, shifted = gray, gray >> 1
    while shifted:
        value ^= shifted
        shifted >>= 1
    if word >> VALUE_BITS != _check_byte(value):
        return None
    t_ns = value * UNIT_NS + UNIT_NS // 2
    if near_ns is not None:
        t_ns += round((near_ns - t_ns) / WRAP_NS) * WRAP_NS
    return t_ns


class ClockWindow:
    """An X11 window that redraws the host clock; each redraw is one atomic CopyArea request."""

    def __init__(self, display_name: str | None, size: tuple[int, int],
                 position: tuple[int, int] = (0, 0)) -> None:
        from Xlib import X, display

        width, height = size
        if width < ORIGIN[0] + STRIP_SIZE[0] or height < ORIGIN[1] + STRIP_SIZE[1]:
            raise ValueError(f"window {width}x{height} is too small for the clock strip")
        self.display = display.Display(display_name)
        screen = self.display.screen()
        self.window = screen.root.create_window(
            position[0], position[1], width, height, 0, screen.root_depth,
            X.InputOutput, X.CopyFromParent, background_pixel=_BACKGROUND,
        )
        self.window.set_wm_name("capture clockface")
        # Drawing into a pixmap and copying it in one request: the X server runs requests one at a
        # time, so a grab never sees half of an update.
        self.pixmap = self.window.create_pixmap(STRIP_SIZE[0], STRIP_SIZE[1], screen.root_depth)
        self.white = self.pixmap.create_gc(foreground=screen.white_pixel)
        self.black = self.pixmap.create_gc(foreground=screen.black_pixel)
        self.copy_gc = self.window.create_gc()
        self.window.map()
        self.display.sync()
        self.id: int = self.window.id

    def draw(self, t_ns: int) -> None:
        ones: list[tuple[int, int, int, int]] = []
        zeros: list[tuple[int, int, int, int]] = []
        for bit, white in enumerate(clock_bits(t_ns)):
            row, column = divmod(bit, COLUMNS)
            (ones if white else zeros).append((column * BLOCK, row * BLOCK, BLOCK, BLOCK))
        self.pixmap.poly_fill_rectangle(self.white, ones)
        self.pixmap.poly_fill_rectangle(self.black, zeros)
        self.window.copy_area(self.copy_gc, self.pixmap, 0, 0, STRIP_SIZE[0], STRIP_SIZE[1],
                              ORIGIN[0], ORIGIN[1])
        self.display.sync()  # the round trip keeps us from queueing stale pictures in the server

    def close(self) -> None:
        self.display.close()


def run(display_name: str | None, size: tuple[int, int], max_hz: float,
        stats_path: Path | None = None, position: tuple[int, int] = (0, 0),
        redraw_log: Path | None = None) -> dict[str, Any]:
    """Redraw the clock until SIGTERM/SIGINT; print the window id first; return redraw stats.

    `redraw_log` receives (drawn time, time the server had finished drawing it) of every redraw
    as an int64 N x 2 .npy: with it a stalled clock can be told from a late grab.
    """
    running = True

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    clock_window = ClockWindow(display_name, size, position)
    print(clock_window.id, flush=True)
    period_ns = int(1e9 / max_hz)
    drawn_times: list[int] = []
    done_times: list[int] = []
    started = previous = now_ns()
    next_draw = started
    while running:
        drawn_at = now_ns()
        clock_window.draw(drawn_at)
        drawn_times.append(drawn_at)
        done_times.append(now_ns())
        previous = drawn_at
        next_draw = max(next_draw + period_ns, now_ns())
        time.sleep(max(0, next_draw - now_ns()) / 1e9)
    clock_window.close()
    times = np.array(drawn_times, dtype=np.int64)
    if redraw_log is not None:
        np.save(redraw_log, np.stack([times, np.array(done_times, dtype=np.int64)], axis=1))
    gaps = np.diff(times) / 1e6 if len(times) > 1 else np.zeros(1)
    stats = {
        "redraws": len(times), "seconds": round((previous - started) / 1e9, 3),
        "rate_hz": round(len(times) / max((previous - started) / 1e9, 1e-9), 1),
        "interval_ms_p50": round(float(np.percentile(gaps, 50)), 3),
        "interval_ms_p99": round(float(np.percentile(gaps, 99)), 3),
        "interval_ms_max": round(float(gaps.max()), 3),
    }
    if stats_path is not None:
        stats_path.write_text(json.dumps(stats, indent=2) + "\n")
    return stats


@contextmanager
def running_clockface(display_name: str, size: tuple[int, int] = (640, 360),
                      position: tuple[int, int] = (0, 0), max_hz: float = 1000.0,
                      stats_path: Path | None = None, redraw_log: Path | None = None,
                      nice: int = 0) -> Iterator[int]:
    """Run the clock window in a child process for the block; yields its X window id.

    A negative `nice` (needs privileges; PermissionError otherwise) keeps the clock redrawing
    when the machine is loaded, so that a benchmark measures the recorder, not the clock window.
    """
    command = [sys.executable, "-m", "capture.clockface", "--display", display_name,
               "--size", f"{size[0]}x{size[1]}", "--position", f"{position[0]},{position[1]}",
               "--max-hz", str(max_hz)]
    if stats_path is not None:
        command += ["--stats", str(stats_path)]
    if redraw_log is not None:
        command += ["--redraw-log", str(redraw_log)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        if nice:
            os.setpriority(os.PRIO_PROCESS, process.pid, nice)
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT_S)
        line = process.stdout.readline() if ready else ""
        if not line.strip():
            raise RuntimeError("the clock window did not start within "
                               f"{START_TIMEOUT_S:g} s (exit code {process.poll()})")
        yield int(line)
    finally:
        stop_process(process)
        if process.stdout is not None:
            process.stdout.close()


def _size(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m capture.clockface", description=__doc__)
    parser.add_argument("--display", default=None, help="X display, e.g. :99 (default $DISPLAY)")
    parser.add_argument("--size", type=_size, default=(640, 360), help="window size WxH")
    parser.add_argument("--position", type=lambda s: tuple(map(int, s.split(","))), default=(0, 0),
                        help="window position X,Y")
    parser.add_argument("--max-hz", type=float, default=1000.0, help="redraw rate cap")
    parser.add_argument("--stats", type=Path, default=None, help="write redraw stats JSON here")
    parser.add_argument("--redraw-log", type=Path, default=None,
                        help="write (drawn, done) ns of every redraw here (.npy)")
    args = parser.parse_args(argv)
    run(args.display, args.size, args.max_hz, args.stats, args.position, args.redraw_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
