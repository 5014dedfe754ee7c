"""The input backend base: event record and kinds, and the focus gate every backend runs through."""

from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from capture.clock import now_ns

POINTER_INTERVAL_NS = 8_000_000  # at most ~125 absolute pointer reports per second


class EventKind(StrEnum):
    """What an input event is; the value is the `kind` string in journals and tables."""

    KEY_PRESS = "key_press"
    KEY_RELEASE = "key_release"
    BUTTON_PRESS = "button_press"
    BUTTON_RELEASE = "button_release"
    WHEEL = "wheel"
    MOTION = "motion"
    POINTER = "pointer"
    FOCUS_IN = "focus_in"
    FOCUS_OUT = "focus_out"
    GAMEPAD_AXIS = "gamepad_axis"
    GAMEPAD_BUTTON_PRESS = "gamepad_button_press"
    GAMEPAD_BUTTON_RELEASE = "gamepad_button_release"

    def release_of(self) -> EventKind | None:
        """The kind that ends a hold this kind begins (key_press -> key_release), else None."""
        return HOLDS.get(self)

    def press_of(self) -> EventKind | None:
        """The kind that began the hold this kind ends (key_release -> key_press), else None."""
        return _PRESS_OF.get(self)


# Press kind -> release kind, in the order synthetic releases are emitted.
HOLDS: dict[EventKind, EventKind] = {
    EventKind.KEY_PRESS: EventKind.KEY_RELEASE,
    EventKind.BUTTON_PRESS: EventKind.BUTTON_RELEASE,
    EventKind.GAMEPAD_BUTTON_PRESS: EventKind.GAMEPAD_BUTTON_RELEASE,
}
_PRESS_OF = {release: press for press, release in HOLDS.items()}


@dataclass(slots=True)
class InputEvent:
    """One input event; field meanings are documented in schemas/events.v1.arrow.json."""

    t_ns: int
    kind: EventKind
    time_source: str = "receive"
    synthetic: bool = False
    key: str | None = None
    keycode: int | None = None
    keysym: int | None = None
    button: str | None = None
    dx: float | None = None
    dy: float | None = None
    x: int | None = None
    y: int | None = None
    axis: str | None = None
    value: float | None = None
    device: str | None = None
    window: str | None = None

    def __post_init__(self) -> None:
        self.kind = EventKind(self.kind)  # a plain string is checked against the known kinds

    def to_record(self) -> dict[str, Any]:
        """The journal/table row: None fields are left out to keep journals small."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True, slots=True)
class WindowInfo:
    """A top-level window and what identifies its game."""

    window_id: int
    wm_class: tuple[str, ...] = ()   # (instance, class) on X11
    title: str = ""
    pid: int | None = None
    executable: str | None = None    # process name, e.g. 'minetest'
    geometry: tuple[int, int, int, int] = (0, 0, 0, 0)  # x, y, width, height on the root

    def matches(self, game: str) -> bool:
        """True if `game` names this window's executable or window class (case-insensitive)."""
        g = game.lower()
        names = [c.lower() for c in self.wm_class]
        if self.executable:
            names.append(self.executable.lower())
        return g in names

    @property
    def window_class(self) -> str | None:
        """What focus events record as `window`: the window class, else the executable."""
        return self.wm_class[-1] if self.wm_class else self.executable


@dataclass(slots=True)
class FocusState:
    """Whether the consented game has focus, and since when (host ns)."""

    focused: bool = False
    since_ns: int = 0
    window: WindowInfo | None = None
    extra: dict[str, Any] = field(default_factory=dict)


EventSink = Callable[[InputEvent], None]
FocusSink = Callable[[bool, WindowInfo | None], None]


class Holds:
    """What is held now (keys, mouse buttons, gamepad buttons), each by the press that began it.

    A key is identified by its keycode (its name if it has none), a mouse button by its name, a
    gamepad button by its device and name. A press of something already held is a repeat and a
    release of something not held is unmatched (pressed before focus came, or already released
    synthetically): `press` and `release` return False for both, and the caller drops them.
    """

    def __init__(self) -> None:
        self._presses: dict[tuple[EventKind, Hashable], InputEvent] = {}

    @staticmethod
    def _identity(event: InputEvent) -> Hashable:
        if event.kind in (EventKind.KEY_PRESS, EventKind.KEY_RELEASE):
            return event.keycode if event.keycode is not None else event.key
        if event.kind in (EventKind.BUTTON_PRESS, EventKind.BUTTON_RELEASE):
            return event.button
        return (event.device, event.axis)

    def press(self, event: InputEvent) -> bool:
        """Remember a press; False if it is a repeat of one still held."""
        slot = (event.kind, self._identity(event))
        if slot in self._presses:
            return False
        self._presses[slot] = event
        return True

    def release(self, event: InputEvent) -> bool:
        """Forget the press `event` ends and name `event` as that press was; False if none."""
        press_kind = event.kind.press_of()
        assert press_kind is not None, f"{event.kind} ends no hold"
        press = self._presses.pop((press_kind, self._identity(event)), None)
        if press is None:
            return False
        event.key, event.keycode, event.keysym = press.key, press.keycode, press.keysym
        event.button, event.axis = press.button, press.axis
        return True

    def release_all(self, t_ns: int,
                    only: Callable[[InputEvent], bool] = lambda press: True) -> list[InputEvent]:
        """Synthetic releases at `t_ns` of what is held (keys, then buttons, then gamepad
        buttons, each in press order), for the presses `only` accepts; forgets them."""
        order = list(HOLDS)
        chosen = sorted((slot for slot, press in self._presses.items() if only(press)),
                        key=lambda slot: order.index(slot[0]))
        releases = []
        for slot in chosen:
            press = self._presses.pop(slot)
            releases.append(InputEvent(
                t_ns=t_ns, kind=HOLDS[press.kind], time_source="derived", synthetic=True,
                key=press.key, keycode=press.keycode, keysym=press.keysym, button=press.button,
                axis=press.axis, device=press.device))
        return releases


@dataclass(slots=True)
class _PendingFocus:
    """A focus change not yet delivered; its stamp may still move to an earlier input's."""

    focused: bool
    window: WindowInfo | None
    t_ns: int
    time_source: str
    releases: list[InputEvent] = field(default_factory=list)


class InputBackend(ABC):
    """Captures keyboard and mouse input for one game while its window has focus.

    `start` begins delivering events to `sink` from a backend thread (the sink only queues);
    events are delivered only while a window matching `game` has focus, in time order (a stamp
    earlier than the last delivered one is raised to it). Focus changes are delivered to `sink`
    as focus_in/focus_out events and to `on_focus`. On focus loss and on stop, keys and buttons
    still held are closed with synthetic releases at that time. While the mouse is captured, the
    absolute pointer position follows motion at most every POINTER_INTERVAL_NS.

    A backend fills the hooks, which run on the backend thread unless said otherwise: `_open`
    (connect, register for input, read the focus state), `_pump` (deliver until `_wake`),
    `_wake` (any thread), `_query_pointer` and `_close`. Its hooks report through the gate:
    `_set_focus`, `_accepting`, `_input`, `_pointer_moved` and `_report_pointer`.
    """

    name: str = "base"
    thread_name: str = "input"
    start_timeout_s: float = 5.0   # how long `start` waits for the focus state to be known

    def __init__(self, game: str, *, keyboard: bool = True, mouse: bool = True,
                 display: str | None = None) -> None:
        self.game = game
        self.keyboard = keyboard
        self.mouse = mouse
        self.display = display
        self.notes: list[str] = []  # fallbacks and anything the manifest should record
        self._thread: threading.Thread | None = None
        self._reset(lambda event: None, None)

    # --- the public interface -----------------------------------------------------------------

    @abstractmethod
    def find_game_window(self) -> WindowInfo | None:
        """The top-level window of the game, if one exists now (any thread)."""

    def start(self, sink: EventSink, on_focus: FocusSink | None = None) -> None:
        """Begin capturing; returns once the focus state is known (or after start_timeout_s).

        Raises what opening the backend raised, with nothing left running.
        """
        if self._thread is not None:
            raise RuntimeError("input capture is already running")
        self._reset(sink, on_focus)
        thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        thread.start()
        self._ready.wait(self.start_timeout_s)
        with self._start_lock:
            self._start_returned = True
            error = self._setup_error
        if error is not None:
            thread.join()
            raise error
        self._thread = thread

    def stop(self) -> None:
        """Stop capturing, close held keys and buttons if focused, and join the thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        while thread.is_alive() and not self._wake():
            thread.join(0.05)  # the backend could not be woken yet (e.g. a full queue)
        thread.join()

    def info(self) -> dict[str, Any]:
        """Name and notes for the session manifest."""
        return {"name": self.name, "notes": list(self.notes)}

    # --- hooks a backend fills ------------------------------------------------------------------

    @abstractmethod
    def _open(self) -> None:
        """Connect and register for input, then read the focus state (report it: _set_focus)."""

    @abstractmethod
    def _pump(self) -> None:
        """Deliver input until `_wake` is called; an exception ends capture with a note."""

    @abstractmethod
    def _wake(self) -> bool:
        """Make `_pump` return (called from another thread); False if it could not ask yet."""

    @abstractmethod
    def _query_pointer(self) -> tuple[int, int] | None:
        """The absolute pointer position now, or None if it cannot be read."""

    @abstractmethod
    def _close(self) -> None:
        """Release what `_open` acquired, also after `_open` failed part way."""

    # --- the gate -------------------------------------------------------------------------------

    def _reset(self, sink: EventSink, on_focus: FocusSink | None) -> None:
        """Fresh gate state for one capture run."""
        self._sink = sink
        self._on_focus = on_focus
        self._ready = threading.Event()
        self._start_lock = threading.Lock()
        self._start_returned = False
        self._setup_error: BaseException | None = None
        self._focused = False
        self._focus_window: WindowInfo | None = None
        self._pending: _PendingFocus | None = None
        self._holds = Holds()
        self._last_emitted_ns = 0
        self._pointer_dirty = False
        self._last_pointer: tuple[int, int] | None = None
        self._last_motion: tuple[int, str] | None = None  # stamp of the newest motion
        self._next_pointer_ns = 0

    def _run(self) -> None:
        try:
            self._open()
        except BaseException as exc:
            with self._start_lock:
                self._setup_error = exc
                if self._start_returned:  # start gave up waiting: nobody will raise it
                    self.notes.append(f"input capture could not start: {exc!r}")
            with contextlib.suppress(Exception):  # the error to report is the first one
                self._close()
            self._ready.set()
            return
        try:
            self._settle()
            self._ready.set()
            self._pump()
        except Exception as exc:  # held keys must still be closed, whatever failed
            self.notes.append(f"input capture stopped early: {exc!r}")
            self._set_focus(False, None, now_ns())
        finally:
            self._ready.set()
            try:
                self._settle()
                if self._focused:
                    for release in self._holds.release_all(now_ns()):
                        self._emit(release)
            finally:
                self._close()

    def _set_focus(self, focused: bool, window: WindowInfo | None, t_ns: int,
                   time_source: str = "receive") -> None:
        """The game gained or lost focus at `t_ns`; delivered by the next `_settle`.

        On a loss, what is held is released at the same time, before the focus_out.
        """
        if focused == self._focused:
            return
        self._settle()
        pending = _PendingFocus(focused, window if focused else self._focus_window, t_ns,
                                time_source)
        if focused:
            self._focus_window = window
            self._pointer_dirty, self._next_pointer_ns = True, 0  # report the pointer at once
            self._last_pointer = self._last_motion = None
        else:
            pending.releases = self._holds.release_all(0)
        self._focused = focused
        self._pending = pending

    def _settle(self) -> None:
        """Deliver a pending focus change: releases, the focus event, then on_focus."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        t_ns = max(pending.t_ns, self._last_emitted_ns)  # releases and focus event share it
        for release in pending.releases:
            release.t_ns = t_ns
            self._emit(release)
        kind = EventKind.FOCUS_IN if pending.focused else EventKind.FOCUS_OUT
        window = pending.window
        self._emit(InputEvent(t_ns=t_ns, kind=kind, time_source=pending.time_source,
                              window=window.window_class if window else None))
        if self._on_focus is not None:
            self._on_focus(pending.focused, window)

    def _accepting(self, t_ns: int, time_source: str) -> bool:
        """Whether input stamped `t_ns` is kept. Input stamped before a pending focus change
        was seen moves the change to its stamp: the change happened no later than that."""
        pending = self._pending
        if pending is not None and t_ns < pending.t_ns:
            pending.t_ns, pending.time_source = t_ns, time_source
        self._settle()
        return self._focused

    def _input(self, event: InputEvent) -> None:
        """Deliver one input event if focused, dropping repeated presses and unmatched
        releases; a release is named as its press was."""
        if not self._accepting(event.t_ns, event.time_source):
            return
        kind = event.kind
        if kind in HOLDS and not self._holds.press(event):
            return
        if kind.press_of() is not None and not self._holds.release(event):
            return
        if kind == EventKind.POINTER:
            assert event.x is not None and event.y is not None
            self._pointer_at((event.x, event.y), event)
            return
        self._emit(event)
        if kind == EventKind.MOTION:
            self._pointer_moved(event.t_ns, event.time_source)

    def _pointer_moved(self, t_ns: int, time_source: str) -> None:
        """The pointer moved at `t_ns`: report its position when next due."""
        self._pointer_dirty = True
        self._last_motion = (t_ns, time_source)

    def _pointer_due_ns(self) -> int | None:
        """When the next pointer report is due, or None if none is owed."""
        return self._next_pointer_ns if self._pointer_dirty else None

    def _report_pointer(self) -> None:
        """Emit the pointer position if it moved, stamped like the motion that moved it."""
        self._pointer_dirty = False
        query_ns = now_ns()
        self._next_pointer_ns = query_ns + POINTER_INTERVAL_NS
        if not (self._focused and self.mouse):
            return
        position = self._query_pointer()
        self._settle()
        if position is None or not self._focused:
            return
        t_ns, time_source = self._last_motion or (query_ns, "receive")
        self._last_motion = None
        self._pointer_at(position, InputEvent(t_ns=t_ns, kind=EventKind.POINTER,
                                              time_source=time_source))

    def _report_pointer_if_due(self) -> None:
        due = self._pointer_due_ns()
        if due is not None and now_ns() >= due:
            self._report_pointer()

    def _pointer_at(self, position: tuple[int, int], event: InputEvent) -> None:
        if position == self._last_pointer:
            return
        self._last_pointer = position
        event.x, event.y = position
        self._emit(event)

    def _emit(self, event: InputEvent) -> None:
        # Keep delivery order = time order (stamps have ms steps; pointer reports are ours).
        event.t_ns = self._last_emitted_ns = max(self._last_emitted_ns, event.t_ns)
        self._sink(event)
