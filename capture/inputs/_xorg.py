"""X11 input backend: XInput2 raw keys, buttons and motion, gated on the game having focus."""

from __future__ import annotations

import contextlib
import gc
import os
import select
import threading
import warnings
from typing import Any

from Xlib import X, error
from Xlib.display import Display
from Xlib.ext import ge, xinput
from Xlib.protocol import rq

from capture.clock import now_ns
from capture.errors import CaptureError
from capture.inputs import x11window
from capture.inputs._base import EventKind, InputBackend, InputEvent, WindowInfo
from capture.inputs._x11focus import GameFocus
from capture.inputs._xi2 import (
    BUTTON_NUMBERS,
    RawEvent,
    ServerClock,
    keysym_name,
    parse_raw_event,
)

__all__ = ["RawEvent", "ServerClock", "XorgInputBackend", "keysym_name", "parse_raw_event"]

FOCUS_POLL_NS = 100_000_000

RAW_KEY_MASK = xinput.RawKeyPressMask | xinput.RawKeyReleaseMask
RAW_MOUSE_MASK = xinput.RawButtonPressMask | xinput.RawButtonReleaseMask | xinput.RawMotionMask
BUTTON_NAMES = {number: name for name, number in BUTTON_NUMBERS.items()}
WHEEL_CLICKS = {4: (0.0, 1.0), 5: (0.0, -1.0), 6: (-1.0, 0.0), 7: (1.0, 0.0)}  # button: (dx, dy)


def open_display(name: str | None) -> Display:
    """A connection to X display `name`; one plain CaptureError naming it if it is unreachable."""
    with warnings.catch_warnings():  # Xlib leaves the socket of a failed attempt unclosed
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            return Display(name)
        except (error.DisplayError, OSError) as exc:  # DisplayConnectionError, DisplayNameError
            reason = str(getattr(exc, "msg", None) or exc)
        gc.collect()
    shown = name or os.environ.get("DISPLAY") or "(none: $DISPLAY is not set)"
    raise CaptureError(f"cannot connect to X display {shown} ({reason}): is the X server "
                       "running, and is it the right display?")


class XorgInputBackend(InputBackend):
    """XInput2 raw input on the root window, gated on the game's top-level window having focus.

    What counts as focus is GameFocus's (capture/inputs/_x11focus.py). Raw events, focus events
    and property changes come over one connection, so a focus change splits the event stream
    exactly; a 100 ms poll finds late windows and catches changes that no event reported. Raw
    events carry the X server's time (time_source x_server).
    """

    name = "xorg-xi2"
    thread_name = "xorg-input"

    def __init__(self, game: str, *, keyboard: bool = True, mouse: bool = True,
                 display: str | None = None) -> None:
        super().__init__(game, keyboard=keyboard, mouse=mouse, display=display)
        self._lookup_display: Display | None = None
        self._lookup_lock = threading.Lock()
        self._wake_lock = threading.Lock()
        self._wake_pipe: tuple[int, int] | None = None
        self._stopping = threading.Event()
        self.dpy: Display | None = None  # the capture thread's connection while it runs

    def find_game_window(self) -> WindowInfo | None:
        """The consented game's window, or None; CaptureError if the display cannot be reached."""
        with self._lookup_lock:
            if self._lookup_display is None:
                self._lookup_display = open_display(self.display)
            found = x11window.find_window(self._lookup_display, self.game)
        return found[1] if found else None

    def stop(self) -> None:
        super().stop()
        with self._lookup_lock:
            if self._lookup_display is not None:
                self._lookup_display.close()
                self._lookup_display = None

    # --- hooks ----------------------------------------------------------------------------

    def _open(self) -> None:
        self._stopping.clear()
        self.dpy = dpy = open_display(self.display)
        extension = dpy.query_extension("XInputExtension")
        if not extension.present:
            raise CaptureError(f"X server {self.display or ''} has no XInput extension")
        self.xi_opcode = extension.major_opcode
        # Announcing 2.2 matters: 2.0 clients get no raw events while another client grabs.
        version = xinput.XIQueryVersion(display=dpy.display, opcode=self.xi_opcode,
                                        major_version=2, minor_version=2)
        if (version.major_version, version.minor_version) < (2, 1):
            self.notes.append(f"XInput {version.major_version}.{version.minor_version}: "
                              "no raw events while another client grabs the device")
        self.clock = ServerClock.calibrate(dpy, self.notes)
        self.root = dpy.screen().root
        self.focus = GameFocus(dpy, self.game, self.notes)
        raw_mask = (RAW_KEY_MASK if self.keyboard else 0) | (RAW_MOUSE_MASK if self.mouse else 0)
        masks = [(xinput.AllDevices, xinput.HierarchyChangedMask)]
        if raw_mask:
            masks.append((xinput.AllMasterDevices, raw_mask))
        self.root.xinput_select_events(masks)
        # Substructure events say when a top-level is mapped or gets a client: look at it again.
        self.root.change_attributes(event_mask=X.PropertyChangeMask | X.SubstructureNotifyMask)
        dpy.sync()
        with self._wake_lock:
            self._wake_pipe = os.pipe()
        self.devices: dict[int, tuple[str, bool]] = {}   # sourceid -> (name, absolute axes)
        self._poll_focus()  # input that follows start() must meet a known focus state
        self.next_poll_ns = now_ns() + FOCUS_POLL_NS

    def _pump(self) -> None:
        assert self.dpy is not None and self._wake_pipe is not None
        while not self._stopping.is_set():
            if now_ns() >= self.next_poll_ns:
                self._poll_focus()
                self.next_poll_ns = now_ns() + FOCUS_POLL_NS
            self._report_pointer_if_due()
            if not self.dpy.pending_events():
                pointer_due = self._pointer_due_ns()
                deadline = self.next_poll_ns if pointer_due is None else min(
                    self.next_poll_ns, pointer_due)
                select.select([self.dpy.fileno(), self._wake_pipe[0]], [], [],
                              max(deadline - now_ns(), 0) / 1e9)
            self._process_events(self.dpy.pending_events())

    def _wake(self) -> bool:
        self._stopping.set()
        with self._wake_lock:
            if self._wake_pipe is not None:
                os.write(self._wake_pipe[1], b"x")
        return True

    def _query_pointer(self) -> tuple[int, int] | None:
        assert self.dpy is not None
        pointer = self.root.query_pointer()
        self._process_events_before(pointer.sequence_number)
        return int(pointer.root_x), int(pointer.root_y)

    def _close(self) -> None:
        with self._wake_lock:
            for fd in self._wake_pipe or ():
                os.close(fd)
            self._wake_pipe = None
        if self.dpy is not None:
            with contextlib.suppress(error.ConnectionClosedError, OSError):
                self.dpy.close()
            self.dpy = None

    # --- events ---------------------------------------------------------------------------

    def _process_events(self, count: int) -> None:
        assert self.dpy is not None
        receive_ns = now_ns()
        for _ in range(count):
            self._handle(self.dpy.next_event(), receive_ns)
        self._settle()

    def _process_events_before(self, serial: int) -> None:
        """Handle the queued events the server sent before it handled our request `serial`.

        An event carries the sequence number of the last request handled when it was sent,
        so a reply splits the event stream exactly, even if later events came in the same read.
        """
        assert self.dpy is not None
        count = 0
        for event in self.dpy.display.event_queue:  # only this thread reads this connection
            sequence = getattr(event, "sequence_number", serial - 1)
            if not 0 < (serial - sequence) & 0xFFFF < 0x8000:
                break
            count += 1
        self._process_events(count)

    def _handle(self, event: rq.Event, receive_ns: int) -> None:
        assert self.dpy is not None
        kind = event.type
        if kind == ge.GenericEventCode and event.extension == self.xi_opcode:
            if event.evtype == xinput.HierarchyChanged:
                self.devices.clear()
            elif xinput.RawKeyPress <= event.evtype <= xinput.RawMotion:
                self._on_raw(event.evtype, parse_raw_event(bytes(event.data)), receive_ns)
        elif kind == X.MappingNotify:
            self.dpy.refresh_keyboard_mapping(event)
        elif self.focus.handle(event):
            if kind == X.PropertyNotify:  # the active window changed: the server stamped it
                self._update_focus(*self.clock.host_ns(event.time, receive_ns))
            else:
                self._update_focus(receive_ns, "receive")

    def _on_raw(self, evtype: int, raw: RawEvent, receive_ns: int) -> None:
        assert self.dpy is not None
        t_ns, source = self.clock.host_ns(raw.time_ms, receive_ns)
        if not self._accepting(t_ns, source):
            return
        device, absolute = self._device(raw.sourceid)
        stamp: dict[str, Any] = {"t_ns": t_ns, "time_source": source, "device": device}
        pressed = evtype in (xinput.RawKeyPress, xinput.RawButtonPress)
        if evtype == xinput.RawMotion:
            if 0 not in raw.values and 1 not in raw.values:
                return  # only scroll valuators moved; the wheel arrives as buttons 4-7
            if absolute:  # a tablet or VM pointer: positions, not deltas; pointer events cover it
                self._pointer_moved(t_ns, source)
                return
            self._input(InputEvent(kind=EventKind.MOTION, dx=raw.values.get(0, 0.0),
                                   dy=raw.values.get(1, 0.0), **stamp))
        elif evtype in (xinput.RawButtonPress, xinput.RawButtonRelease):
            if raw.detail in WHEEL_CLICKS:
                if pressed:
                    dx, dy = WHEEL_CLICKS[raw.detail]
                    self._input(InputEvent(kind=EventKind.WHEEL, dx=dx, dy=dy, **stamp))
                return
            kind = EventKind.BUTTON_PRESS if pressed else EventKind.BUTTON_RELEASE
            self._input(InputEvent(kind=kind, button=BUTTON_NAMES.get(
                raw.detail, f"button{raw.detail}"), **stamp))
        elif pressed:
            keysym = self.dpy.keycode_to_keysym(raw.detail, 0)
            self._input(InputEvent(kind=EventKind.KEY_PRESS, key=keysym_name(keysym),
                                   keycode=raw.detail, keysym=keysym, **stamp))
        else:  # named by the gate as its press was
            self._input(InputEvent(kind=EventKind.KEY_RELEASE, keycode=raw.detail, **stamp))

    def _device(self, sourceid: int) -> tuple[str, bool]:
        """(name, reports absolute positions) of a slave device, asked once per device."""
        assert self.dpy is not None
        if sourceid not in self.devices:
            try:
                info = self.dpy.xinput_query_device(sourceid).devices[0]
                name = info.name.decode() if isinstance(info.name, bytes) else str(info.name)
                absolute = any(c.type == xinput.ValuatorClass and c.number in (0, 1)
                               and c.mode == 1 for c in info.classes)
            except (error.XError, IndexError):
                name, absolute = f"device{sourceid}", False
            if absolute:
                self.notes.append(f"{name!r} reports absolute positions: "
                                  "no motion deltas from it, pointer events only")
            self.devices[sourceid] = (name, absolute)
        return self.devices[sourceid]

    # --- focus ----------------------------------------------------------------------------

    def _poll_focus(self) -> None:
        """Find new game windows and re-read focus, in case an event was missed."""
        assert self.dpy is not None
        self.focus.find_game_windows()
        observed_ns = now_ns()
        reply = self.dpy.get_input_focus()
        focus_top_level = x11window.top_level_of_focus(self.dpy, reply.focus)
        active_ok = self.focus.active_window_is_game(x11window.active_window(self.dpy))
        self._process_events_before(reply.sequence_number)
        self.focus.polled(focus_top_level, active_ok)
        self._update_focus(observed_ns, "receive")

    def _update_focus(self, t_ns: int, time_source: str) -> None:
        focused = self.focus.focused
        window = self.focus.focused_window() if focused and not self._focused else None
        self._set_focus(focused, window, t_ns, time_source)
