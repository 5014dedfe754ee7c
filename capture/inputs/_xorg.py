"""X11 input backend: XInput2 raw keys, buttons and motion, gated on the game having focus."""

from __future__ import annotations

import contextlib
import gc
import os
import select
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

from Xlib import X, error
from Xlib.display import Display
from Xlib.ext import ge, xinput
from Xlib.protocol import rq

from capture.clock import now_ns
from capture.errors import CaptureError
from capture.inputs import x11window
from capture.inputs._base import (
    EventSink,
    FocusSink,
    InputBackend,
    InputEvent,
    WindowInfo,
    release_held,
)
from capture.inputs._xi2 import RawEvent, ServerClock, keysym_name, parse_raw_event

__all__ = ["RawEvent", "ServerClock", "XorgInputBackend", "keysym_name", "parse_raw_event"]

FOCUS_POLL_NS = 100_000_000
POINTER_INTERVAL_NS = 8_000_000          # at most ~125 absolute pointer reports per second

RAW_KEY_MASK = xinput.RawKeyPressMask | xinput.RawKeyReleaseMask
RAW_MOUSE_MASK = xinput.RawButtonPressMask | xinput.RawButtonReleaseMask | xinput.RawMotionMask
BUTTON_NAMES = {1: "left", 2: "middle", 3: "right", 8: "back", 9: "forward"}
WHEEL_CLICKS = {4: (0.0, 1.0), 5: (0.0, -1.0), 6: (-1.0, 0.0), 7: (1.0, 0.0)}  # button: (dx, dy)
# Focus details that say nothing about whether focus is inside the window (PointerRoot mode).
POINTER_DETAILS = (X.NotifyPointer, X.NotifyPointerRoot, X.NotifyDetailNone)


@dataclass(slots=True)
class _PendingFocus:
    """A focus change whose stamp may still be tightened by the next server-stamped event."""

    focused: bool
    window: WindowInfo | None
    t_ns: int
    time_source: str
    releases: list[InputEvent] = field(default_factory=list)


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

    Focus counts when X input focus is inside a top-level window matching `game` and, where a
    window manager sets _NET_ACTIVE_WINDOW, that names the same window. PointerRoot focus counts
    as unfocused. Raw events, focus events and property changes come over one connection, so a
    focus change splits the event stream exactly; a 100 ms poll finds late windows and catches
    changes that no event reported.
    """

    name = "xorg-xi2"

    def __init__(self, game: str, *, keyboard: bool = True, mouse: bool = True,
                 display: str | None = None) -> None:
        super().__init__(game, keyboard=keyboard, mouse=mouse, display=display)
        self._lookup_display: Display | None = None
        self._lookup_lock = threading.Lock()
        self._capture: _Capture | None = None
        self._thread: threading.Thread | None = None

    def find_game_window(self) -> WindowInfo | None:
        """The consented game's window, or None; CaptureError if the display cannot be reached."""
        with self._lookup_lock:
            if self._lookup_display is None:
                self._lookup_display = open_display(self.display)
            found = x11window.find_window(self._lookup_display, self.game)
        return found[1] if found else None

    def start(self, sink: EventSink, on_focus: FocusSink | None = None) -> None:
        if self._thread is not None:
            raise RuntimeError("input capture is already running")
        self._capture = _Capture(self, sink, on_focus)
        self._thread = threading.Thread(target=self._capture.run, name="xorg-input", daemon=True)
        self._thread.start()
        # Input that follows start() must meet a known focus state, not the unfocused default.
        self._capture.initial_focus_known.wait(timeout=2.0)

    def stop(self) -> None:
        if self._capture is not None and self._thread is not None:
            self._capture.request_stop()
            self._thread.join()
            self._capture.close()
        self._capture = self._thread = None
        with self._lookup_lock:
            if self._lookup_display is not None:
                self._lookup_display.close()
                self._lookup_display = None


class _Capture:
    """One capture run: owns the X connection and all state; runs on the backend thread."""

    def __init__(self, backend: XorgInputBackend, sink: EventSink,
                 on_focus: FocusSink | None) -> None:
        self.backend = backend
        self.sink = sink
        self.on_focus = on_focus
        self.dpy = open_display(backend.display)
        try:
            self._set_up()
        except BaseException:
            self.dpy.close()
            raise

    def _set_up(self) -> None:
        backend, dpy = self.backend, self.dpy
        extension = dpy.query_extension("XInputExtension")
        if not extension.present:
            raise CaptureError(f"X server {backend.display or ''} has no XInput extension")
        self.xi_opcode = extension.major_opcode
        # Announcing 2.2 matters: 2.0 clients get no raw events while another client grabs.
        version = xinput.XIQueryVersion(display=dpy.display, opcode=self.xi_opcode,
                                        major_version=2, minor_version=2)
        if (version.major_version, version.minor_version) < (2, 1):
            backend.notes.append(f"XInput {version.major_version}.{version.minor_version}: "
                                 "no raw events while another client grabs the device")
        self.clock = ServerClock.calibrate(dpy, backend.notes)
        self.root = dpy.screen().root
        self.net_active_window = dpy.intern_atom("_NET_ACTIVE_WINDOW")
        raw_mask = (RAW_KEY_MASK if backend.keyboard else 0) | (
            RAW_MOUSE_MASK if backend.mouse else 0)
        masks = [(xinput.AllDevices, xinput.HierarchyChangedMask)]
        if raw_mask:
            masks.append((xinput.AllMasterDevices, raw_mask))
        self.root.xinput_select_events(masks)
        # Substructure events say when a top-level is mapped or gets a client: look at it again.
        self.root.change_attributes(event_mask=X.PropertyChangeMask | X.SubstructureNotifyMask)
        dpy.sync()
        self.wake_read, self.wake_write = os.pipe()
        self.stopping = threading.Event()
        self.initial_focus_known = threading.Event()

        self.game_windows: dict[int, WindowInfo] = {}   # top-level id -> info, all selected on
        self.checked_top_levels: set[int] = set()
        self.x_focus_top_level: int | None = None        # a game top-level holding X focus
        self.active_window_ok = True                     # _NET_ACTIVE_WINDOW unset or the game
        self.grabbed_elsewhere = False                   # another client grabbed the keyboard
        self.focused = False
        self.focused_window: WindowInfo | None = None
        self.pending_focus: _PendingFocus | None = None
        self.held_keys: dict[int, InputEvent] = {}       # keycode -> its press
        self.held_buttons: dict[int, InputEvent] = {}
        self.devices: dict[int, tuple[str, bool]] = {}   # sourceid -> (name, absolute axes)
        self.last_emitted_ns = 0
        self.pointer_dirty = False
        self.last_pointer: tuple[int, int] | None = None
        self.last_motion: tuple[int, str] | None = None  # stamp of the newest raw motion
        self.next_pointer_ns = 0
        self.next_poll_ns = 0

    def request_stop(self) -> None:
        self.stopping.set()
        os.write(self.wake_write, b"x")

    def close(self) -> None:
        os.close(self.wake_read)
        os.close(self.wake_write)

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                if now_ns() >= self.next_poll_ns:
                    self._poll_focus()
                    self.next_poll_ns = now_ns() + FOCUS_POLL_NS
                    self.initial_focus_known.set()
                if self.pointer_dirty and now_ns() >= self.next_pointer_ns:
                    self._report_pointer()
                if not self.dpy.pending_events():
                    select.select([self.dpy.fileno(), self.wake_read], [], [],
                                  self._seconds_to_next_deadline())
                self._process_events(self.dpy.pending_events())
        except Exception as exc:  # the thread must close held keys and report, whatever failed
            self.backend.notes.append(f"input capture stopped early: {exc!r}")
            if self.focused:
                self._transition(False, now_ns(), "receive")
        finally:
            self.initial_focus_known.set()
            self._flush_pending_focus()
            stopped_ns = now_ns()
            for release in self._held_releases() if self.focused else []:
                release.t_ns = stopped_ns
                self._emit(release)
            with contextlib.suppress(error.ConnectionClosedError, OSError):
                self.dpy.close()

    def _seconds_to_next_deadline(self) -> float:
        deadline = self.next_poll_ns
        if self.pointer_dirty:
            deadline = min(deadline, self.next_pointer_ns)
        return max(deadline - now_ns(), 0) / 1e9

    def _process_events(self, count: int) -> None:
        receive_ns = now_ns()
        for _ in range(count):
            self._handle(self.dpy.next_event(), receive_ns)
        self._flush_pending_focus()

    def _process_events_before(self, serial: int) -> None:
        """Handle the queued events the server sent before it handled our request `serial`.

        An event carries the sequence number of the last request handled when it was sent,
        so a reply splits the event stream exactly, even if later events came in the same read.
        """
        count = 0
        for event in self.dpy.display.event_queue:  # only this thread reads this connection
            sequence = getattr(event, "sequence_number", serial - 1)
            if not 0 < (serial - sequence) & 0xFFFF < 0x8000:
                break
            count += 1
        self._process_events(count)

    def _handle(self, event: rq.Event, receive_ns: int) -> None:
        kind = event.type
        if kind == ge.GenericEventCode and event.extension == self.xi_opcode:
            if event.evtype == xinput.HierarchyChanged:
                self.devices.clear()
            elif xinput.RawKeyPress <= event.evtype <= xinput.RawMotion:
                self._on_raw(event.evtype, parse_raw_event(bytes(event.data)), receive_ns)
        elif kind in (X.FocusIn, X.FocusOut):
            self._on_focus_event(event, receive_ns)
        elif kind == X.PropertyNotify and event.atom == self.net_active_window:
            t_ns, source = self.clock.host_ns(event.time, receive_ns)
            self.active_window_ok = self._active_window_is_game(x11window.active_window(self.dpy))
            self._update_focus(t_ns, source)
        elif kind == X.DestroyNotify and (
                destroyed := x11window.resource_id(event.window)) in self.game_windows:
            del self.game_windows[destroyed]
            if self.x_focus_top_level == destroyed:
                self.x_focus_top_level = None
                self._update_focus(receive_ns, "receive")
        elif kind == X.MapNotify:
            self.checked_top_levels.discard(x11window.resource_id(event.window))
        elif kind == X.ReparentNotify:
            # A window manager framed a client (or let one go): the frame is the top-level now.
            moved = x11window.resource_id(event.window)
            self.checked_top_levels.discard(moved)
            self.checked_top_levels.discard(x11window.resource_id(event.parent))
            if self.game_windows.pop(moved, None) is not None and self.x_focus_top_level == moved:
                self.x_focus_top_level = None
                self._update_focus(receive_ns, "receive")
        elif kind == X.MappingNotify:
            self.dpy.refresh_keyboard_mapping(event)

    # --- input ----------------------------------------------------------------------------

    def _on_raw(self, evtype: int, raw: RawEvent, receive_ns: int) -> None:
        t_ns, source = self.clock.host_ns(raw.time_ms, receive_ns)
        if self.pending_focus is not None and t_ns < self.pending_focus.t_ns:
            self.pending_focus.t_ns, self.pending_focus.time_source = t_ns, source
        self._flush_pending_focus()
        if not self.focused:
            return
        device = self._device(raw.sourceid)
        stamp: dict[str, Any] = {"t_ns": t_ns, "time_source": source, "device": device[0]}
        if evtype == xinput.RawMotion:
            self._on_motion(raw, device[1], stamp)
        elif evtype in (xinput.RawButtonPress, xinput.RawButtonRelease):
            self._on_button(raw.detail, evtype == xinput.RawButtonPress, stamp)
        else:
            self._on_key(raw.detail, evtype == xinput.RawKeyPress, stamp)

    def _on_key(self, keycode: int, pressed: bool, stamp: dict[str, Any]) -> None:
        if pressed:
            if keycode in self.held_keys:
                return  # auto-repeat (raw events should not repeat, but a press is a press)
            keysym = self.dpy.keycode_to_keysym(keycode, 0)
            press = InputEvent(kind="key_press", key=keysym_name(keysym), keycode=keycode,
                               keysym=keysym, **stamp)
            self.held_keys[keycode] = press
            self._emit(press)
        elif (press := self.held_keys.pop(keycode, None)) is not None:
            self._emit(InputEvent(kind="key_release", key=press.key, keycode=keycode,
                                  keysym=press.keysym, **stamp))

    def _on_button(self, number: int, pressed: bool, stamp: dict[str, Any]) -> None:
        if number in WHEEL_CLICKS:
            if pressed:
                dx, dy = WHEEL_CLICKS[number]
                self._emit(InputEvent(kind="wheel", dx=dx, dy=dy, **stamp))
            return
        if pressed:
            if number not in self.held_buttons:
                press = InputEvent(kind="button_press",
                                   button=BUTTON_NAMES.get(number, f"button{number}"), **stamp)
                self.held_buttons[number] = press
                self._emit(press)
        elif (press := self.held_buttons.pop(number, None)) is not None:
            self._emit(InputEvent(kind="button_release", button=press.button, **stamp))

    def _on_motion(self, raw: RawEvent, absolute: bool, stamp: dict[str, Any]) -> None:
        if 0 not in raw.values and 1 not in raw.values:
            return  # only scroll valuators moved; the wheel arrives as buttons 4-7
        self.pointer_dirty = True
        self.last_motion = (stamp["t_ns"], stamp["time_source"])
        if absolute:
            return  # a tablet or VM pointer: positions, not deltas; the pointer events cover it
        self._emit(InputEvent(kind="motion", dx=raw.values.get(0, 0.0),
                              dy=raw.values.get(1, 0.0), **stamp))

    def _device(self, sourceid: int) -> tuple[str, bool]:
        """(name, reports absolute positions) of a slave device, asked once per device."""
        if sourceid not in self.devices:
            try:
                info = self.dpy.xinput_query_device(sourceid).devices[0]
                name = info.name.decode() if isinstance(info.name, bytes) else str(info.name)
                absolute = any(c.type == xinput.ValuatorClass and c.number in (0, 1)
                               and c.mode == 1 for c in info.classes)
            except (error.XError, IndexError):
                name, absolute = f"device{sourceid}", False
            if absolute:
                self.backend.notes.append(f"{name!r} reports absolute positions: "
                                          "no motion deltas from it, pointer events only")
            self.devices[sourceid] = (name, absolute)
        return self.devices[sourceid]

    def _report_pointer(self) -> None:
        """Emit the absolute pointer position if it moved, stamped like the motion that moved it."""
        self.pointer_dirty = False
        self.next_pointer_ns = now_ns() + POINTER_INTERVAL_NS
        if not (self.focused and self.backend.mouse):
            return
        query_ns = now_ns()
        pointer = self.root.query_pointer()
        self._process_events_before(pointer.sequence_number)
        position = (int(pointer.root_x), int(pointer.root_y))
        if not self.focused or position == self.last_pointer:
            return
        self.last_pointer = position
        t_ns, source = self.last_motion or (query_ns, "receive")
        self.last_motion = None
        self._emit(InputEvent(t_ns=t_ns, time_source=source, kind="pointer",
                              x=position[0], y=position[1]))

    def _emit(self, event: InputEvent) -> None:
        # X times have 1 ms steps and pointer reports are ours: keep delivery order = time order.
        event.t_ns = self.last_emitted_ns = max(self.last_emitted_ns, event.t_ns)
        self.sink(event)

    # --- focus ----------------------------------------------------------------------------

    def _on_focus_event(self, event: rq.Event, receive_ns: int) -> None:
        top_level = x11window.resource_id(event.window)
        if top_level not in self.game_windows or event.detail in POINTER_DETAILS:
            return
        if event.type == X.FocusOut and event.detail == X.NotifyInferior:
            return  # focus (or a grab) moved to a child: still inside the game
        if event.type == X.FocusIn:
            self.x_focus_top_level = top_level
            if event.mode != X.NotifyWhileGrabbed:
                self.grabbed_elsewhere = False
        elif event.mode == X.NotifyGrab:
            # Keys now go to another client's grab, though GetInputFocus still names the game.
            if not self.grabbed_elsewhere:
                self.backend.notes.append("keyboard grabbed outside the game window while it had "
                                          "focus: input dropped until the grab ended")
            self.grabbed_elsewhere = True
        else:
            self.x_focus_top_level = None
        self._update_focus(receive_ns, "receive")

    def _poll_focus(self) -> None:
        """Find new game windows and re-read focus, in case an event was missed."""
        self._find_game_windows()
        observed_ns = now_ns()
        reply = self.dpy.get_input_focus()
        focus_top_level = x11window.top_level_of_focus(self.dpy, reply.focus)
        active_ok = self._active_window_is_game(x11window.active_window(self.dpy))
        self._process_events_before(reply.sequence_number)
        self.x_focus_top_level = focus_top_level if focus_top_level in self.game_windows else None
        self.active_window_ok = active_ok
        self._update_focus(observed_ns, "receive")

    def _find_game_windows(self) -> None:
        """Look at new top-levels, and at those mapped or given a client since we last looked."""
        present = set(x11window.top_level_windows(self.dpy, viewable_only=False))
        self.checked_top_levels &= present
        for top_level in present - self.checked_top_levels:
            self.checked_top_levels.add(top_level)
            info = x11window.window_info(self.dpy, top_level)
            if info is not None and info.matches(self.backend.game):
                catch = error.CatchError(error.BadWindow)
                x11window.window(self.dpy, top_level).change_attributes(
                    event_mask=X.FocusChangeMask | X.StructureNotifyMask, onerror=catch)
                self.dpy.sync()
                if not catch.get_error():
                    self.game_windows[top_level] = info

    def _active_window_is_game(self, active: int | None) -> bool:
        if active is None:
            return True
        if active in self.game_windows or any(
                info.window_id == active for info in self.game_windows.values()):
            return True
        return x11window.top_level_of(self.dpy, active) in self.game_windows

    def _update_focus(self, t_ns: int, time_source: str) -> None:
        focused = (self.x_focus_top_level is not None and self.active_window_ok
                   and not self.grabbed_elsewhere)
        if focused != self.focused:
            self._transition(focused, t_ns, time_source)

    def _transition(self, focused: bool, t_ns: int, time_source: str) -> None:
        self._flush_pending_focus()
        if focused and self.x_focus_top_level is not None:
            # Fresh geometry and title for on_focus; what was found at discovery may be stale.
            self.focused_window = (x11window.window_info(self.dpy, self.x_focus_top_level)
                                   or self.game_windows[self.x_focus_top_level])
            self.pointer_dirty = True
            self.last_pointer = None
        pending = _PendingFocus(focused, self.focused_window, t_ns, time_source)
        if not focused:
            pending.releases = self._held_releases()
        self.focused = focused
        self.pending_focus = pending

    def _held_releases(self) -> list[InputEvent]:
        """Synthetic releases (time set later) for every key and button still held."""
        return release_held(self.held_keys, self.held_buttons, 0)

    def _flush_pending_focus(self) -> None:
        pending, self.pending_focus = self.pending_focus, None
        if pending is None:
            return
        t_ns = max(pending.t_ns, self.last_emitted_ns)  # releases and focus event share it
        for release in pending.releases:
            release.t_ns = t_ns
            self._emit(release)
        window = pending.window
        window_class = None
        if window is not None:
            window_class = window.wm_class[-1] if window.wm_class else window.executable
        self._emit(InputEvent(t_ns=t_ns, kind="focus_in" if pending.focused else "focus_out",
                              time_source=pending.time_source, window=window_class))
        if self.on_focus is not None:
            self.on_focus(pending.focused, window)

