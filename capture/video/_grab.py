"""The grabber process: takes screenshots on a fixed schedule into a shared-memory ring."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

import numpy as np

from capture.clock import now_ns

NS_PER_S = 1_000_000_000
FOLLOW_INTERVAL_NS = 500_000_000  # fallback re-check of the window's position (events come first)
IDLE_POLL_S = 0.01                # while paused, waiting to start or the window is hidden

# grabber -> encoder, one per frame: (slot, capture_time_ns, grab_duration_ns, dropped_before)
FrameMessage = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class RingSpec:
    """A ring of `slots` BGRA pictures of width x height in one shared buffer."""

    slots: int
    width: int
    height: int

    @property
    def slot_bytes(self) -> int:
        return self.width * self.height * 4

    def views(self, buffer: Any) -> np.ndarray:
        """The ring as an array of shape (slots, height, width, 4) over `buffer`."""
        flat = np.frombuffer(buffer, dtype=np.uint8, count=self.slots * self.slot_bytes)
        return flat.reshape(self.slots, self.height, self.width, 4)


@dataclass(frozen=True, slots=True)
class GrabPlan:
    """What the grabber records and how often; resolved by the owner before the start."""

    display: str
    fps: int
    origin: tuple[int, int]           # the target's top-left on the root window at start
    window_id: int | None             # followed as it moves; None for a fixed region
    screen_size: tuple[int, int]
    owner_pid: int                    # the grabber finishes on its own if this process dies


@dataclass(slots=True)
class Signals:
    """Flags and a counter in shared memory, shared by the owner, the grabber and the encoder.

    Plain shared values rather than multiprocessing Events: Event.set() waits for the processes
    sleeping in wait() to wake, so a child killed while waiting would hang the owner forever.
    """

    go: Any          # ctypes bool: set by the owner once both children are ready
    capturing: Any   # ctypes bool: cleared while paused
    stop: Any        # ctypes bool
    consumed: Any    # ctypes int64: frames the encoder took out of the ring


def ignore_interrupts() -> list[bool]:
    """Ctrl-C reaches every process of the terminal: only the owner reacts; SIGTERM sets a flag."""
    terminated = [False]

    def _on_term(_signum: int, _frame: FrameType | None) -> None:
        terminated[0] = True

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_term)
    return terminated


def _tighten_timer_slack() -> None:
    """Ask Linux to wake sleeps within 1 µs instead of the default 50 µs."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_timerslack = 29
        libc.prctl(pr_set_timerslack, 1, 0, 0, 0)


class _WindowFollower:
    """Tracks where the target window is on the root and whether it can be seen."""

    def __init__(self, display_name: str, window_id: int, size: tuple[int, int]) -> None:
        from Xlib import X, display

        self._display = display.Display(display_name)
        self._root = self._display.screen().root
        self._window = self._display.create_resource_object("window", window_id)
        # Moves, unmaps and destruction arrive as events (event masks are per client, so this
        # does not disturb the game); the periodic check stays as a fallback.
        self._window.change_attributes(event_mask=X.StructureNotifyMask)
        self._display.sync()
        self.gone = False
        self._size = size
        self.resized_to: tuple[int, int] | None = None  # first size seen other than `size`

    def changed(self) -> bool:
        """True if the window was moved, resized, unmapped or destroyed since the last call."""
        from Xlib import X

        events: int = self._display.pending_events()  # reads the socket, no round trip
        for _ in range(events):
            event = self._display.next_event()
            if event.type == X.ConfigureNotify and self.resized_to is None \
                    and (event.width, event.height) != self._size:
                self.resized_to = (int(event.width), int(event.height))
        return events > 0

    def position(self) -> tuple[int, int] | None:
        """The window's top-left on the root, or None if it is unmapped or destroyed."""
        from Xlib import X
        from Xlib.error import XError

        if self.gone:
            return None
        try:
            if self._window.get_attributes().map_state != X.IsViewable:
                return None
            origin = self._root.translate_coords(self._window, 0, 0)
        except XError:
            self.gone = True
            return None
        return int(origin.x), int(origin.y)

    def close(self) -> None:
        self._display.close()


class _Grabber:
    """The schedule, the ring bookkeeping and the screenshots of one recording."""

    def __init__(self, plan: GrabPlan, spec: RingSpec, ring: Any, signals: Signals,
                 frames_out: Connection, terminated: list[bool]) -> None:
        import mss

        self.plan, self.spec, self.signals = plan, spec, signals
        self.frames_out, self.terminated = frames_out, terminated
        self.slots = spec.views(ring)
        self.screenshooter = mss.MSS(display=plan.display)
        self.follower = (_WindowFollower(plan.display, plan.window_id, (spec.width, spec.height))
                         if plan.window_id is not None else None)
        self.origin: tuple[int, int] | None = plan.origin
        self.notes: list[str] = []
        self.produced = 0
        self.pending_drops = 0  # slots missed since the last frame sent
        self.drops_by_reason = {"woke late": 0, "encoder behind": 0, "window off screen": 0}
        self.owner_lost = False
        self.resize_noted = False

    def performance_notes(self) -> list[str]:
        impl = getattr(self.screenshooter, "_impl", None)
        return [f"mss: {s}" for s in getattr(impl, "performance_status", [])]

    def should_stop(self) -> bool:
        if self.signals.stop.value or self.terminated[0]:
            return True
        if os.getppid() != self.plan.owner_pid:
            self.owner_lost = True
            return True
        return False

    def _follow(self) -> None:
        if self.follower is not None:
            was_gone = self.follower.gone
            self.origin = self.follower.position()
            if self.follower.gone and not was_gone:
                self.notes.append(f"target window went away at {now_ns()} ns; grabbing stopped")
            if self.follower.resized_to and not self.resize_noted:
                self.resize_noted = True
                width, height = self.follower.resized_to
                self.notes.append(f"target window resized to {width}x{height} at {now_ns()} ns; "
                                  f"kept recording {self.spec.width}x{self.spec.height}")

    def _wait_until_grabbable(self) -> bool:
        """Idle while paused or while the window is hidden; False if asked to stop meanwhile."""
        next_follow = 0
        while True:
            if self.should_stop():
                return False
            now = now_ns()
            if now >= next_follow:
                self._follow()
                next_follow = now + FOLLOW_INTERVAL_NS // 2
            if self.signals.capturing.value and self.origin is not None:
                return True
            time.sleep(IDLE_POLL_S)

    def run(self) -> None:
        fps = self.plan.fps
        if not self._wait_until_grabbable():
            return
        start = now_ns()
        slot_index = 0
        next_follow = start + FOLLOW_INTERVAL_NS
        while True:
            deadline = start + slot_index * NS_PER_S // fps
            delay = deadline - now_ns()
            if delay > 0:
                time.sleep(delay / NS_PER_S)
            if self.should_stop():
                return
            if self.follower is not None and self.follower.changed():
                self._follow()
            if not self.signals.capturing.value or self.origin is None:
                if not self._wait_until_grabbable():
                    return
                start, slot_index = now_ns(), 0  # a new schedule: paused time is not a drop
                continue
            woke = now_ns()
            current = (woke - start) * fps // NS_PER_S
            if current > slot_index:
                self._drop(current - slot_index, "woke late")
                slot_index = current
            slot_index += 1
            if self.produced - self.signals.consumed.value >= self.spec.slots:
                self._drop(1, "encoder behind")  # drop rather than wait
                continue
            self._grab_and_send()
            if now_ns() >= next_follow:
                self._follow()
                next_follow = now_ns() + FOLLOW_INTERVAL_NS

    def _drop(self, slots: int, reason: str) -> None:
        self.pending_drops += slots
        self.drops_by_reason[reason] += slots

    def drop_notes(self) -> list[str]:
        return [f"{count} slots dropped: {reason}"
                for reason, count in self.drops_by_reason.items() if count]

    def _grab_and_send(self) -> None:
        assert self.origin is not None
        x, y = self.origin
        width, height = self.spec.width, self.spec.height
        screen_width, screen_height = self.plan.screen_size
        left, top = max(x, 0), max(y, 0)
        right, bottom = min(x + width, screen_width), min(y + height, screen_height)
        if right <= left or bottom <= top:
            self._drop(1, "window off screen")
            return
        monitor = {"left": left, "top": top, "width": right - left, "height": bottom - top}
        slot = self.produced % self.spec.slots
        capture_time = now_ns()
        shot = self.screenshooter.grab(monitor)
        grab_duration = now_ns() - capture_time
        pixels = np.frombuffer(shot.raw, dtype=np.uint8).reshape(bottom - top, right - left, 4)
        picture = self.slots[slot]
        if (right - left, bottom - top) == (width, height):
            picture[...] = pixels
        else:  # partly off screen: black where the window cannot be seen
            picture[...] = 0
            picture[top - y:bottom - y, left - x:right - x] = pixels
        message: FrameMessage = (slot, capture_time, grab_duration, self.pending_drops)
        self.frames_out.send(message)
        self.pending_drops = 0
        self.produced += 1

    def close(self) -> None:
        self.screenshooter.close()
        if self.follower is not None:
            self.follower.close()


def run_grabber(plan: GrabPlan, spec: RingSpec, ring: Any, signals: Signals,
                frames_out: Connection, status_out: Connection) -> None:
    """Process entry: report ready, wait for `go`, grab until stopped, then report the end."""
    terminated = ignore_interrupts()
    _tighten_timer_slack()
    try:
        grabber = _Grabber(plan, spec, ring, signals, frames_out, terminated)
    except Exception as exc:
        status_out.send(("failed", f"the screen grabber could not start: {exc!r}"))
        return
    status_out.send(("ready", {}))
    error: str | None = None
    try:
        while not signals.go.value and not grabber.should_stop():
            time.sleep(IDLE_POLL_S)
        if signals.go.value:
            grabber.run()
    except BrokenPipeError:
        error = "the encoder process went away"
    except Exception as exc:
        error = f"the screen grabber failed: {exc!r}"
    with contextlib.suppress(OSError):
        frames_out.send(None)  # end of stream: the encoder finishes the file
    if grabber.owner_lost:
        grabber.notes.append("the owning process died; finished the recording on our own")
    grabber.close()
    with contextlib.suppress(OSError):  # the owner may be gone
        status_out.send(("end", {
            "cpu_seconds": time.process_time(), "trailing_drops": grabber.pending_drops,
            "notes": grabber.notes + grabber.drop_notes() + grabber.performance_notes(),
            "error": error,
        }))
