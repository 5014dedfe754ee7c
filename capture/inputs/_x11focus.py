"""Whether X input focus is in the game: its windows, focus events, grabs and active window."""

from __future__ import annotations

from Xlib import X, error
from Xlib.display import Display
from Xlib.protocol import rq

from capture.inputs import x11window
from capture.inputs._base import WindowInfo

# Focus details that say nothing about whether focus is inside the window (PointerRoot mode).
POINTER_DETAILS = (X.NotifyPointer, X.NotifyPointerRoot, X.NotifyDetailNone)


class GameFocus:
    """The focus state of one game's top-level windows, on the capture thread's connection.

    Focus counts when X input focus is inside a top-level window matching `game`, no other
    client grabbed the keyboard, and, where a window manager sets _NET_ACTIVE_WINDOW, that names
    the same window. PointerRoot focus counts as unfocused.
    """

    def __init__(self, dpy: Display, game: str, notes: list[str]) -> None:
        self.dpy = dpy
        self.game = game
        self.notes = notes
        self.net_active_window = dpy.intern_atom("_NET_ACTIVE_WINDOW")
        self.game_windows: dict[int, WindowInfo] = {}   # top-level id -> info, all selected on
        self.checked_top_levels: set[int] = set()
        self.x_focus_top_level: int | None = None        # a game top-level holding X focus
        self.active_window_ok = True                     # _NET_ACTIVE_WINDOW unset or the game
        self.grabbed_elsewhere = False                   # another client grabbed the keyboard

    @property
    def focused(self) -> bool:
        return (self.x_focus_top_level is not None and self.active_window_ok
                and not self.grabbed_elsewhere)

    def focused_window(self) -> WindowInfo | None:
        """Fresh geometry and title of the focused game window (discovery's may be stale)."""
        top_level = self.x_focus_top_level
        if top_level is None:
            return None
        return x11window.window_info(self.dpy, top_level) or self.game_windows[top_level]

    def handle(self, event: rq.Event) -> bool:
        """Take in a core event; True if focus may have changed with it."""
        kind = event.type
        if kind in (X.FocusIn, X.FocusOut):
            return self._on_focus_event(event)
        if kind == X.PropertyNotify and event.atom == self.net_active_window:
            self.active_window_ok = self.active_window_is_game(x11window.active_window(self.dpy))
            return True
        if kind == X.DestroyNotify:
            destroyed = x11window.resource_id(event.window)
            if self.game_windows.pop(destroyed, None) is not None:
                return self._forget_focus(destroyed)
        elif kind == X.MapNotify:
            self.checked_top_levels.discard(x11window.resource_id(event.window))
        elif kind == X.ReparentNotify:
            # A window manager framed a client (or let one go): the frame is the top-level now.
            moved = x11window.resource_id(event.window)
            self.checked_top_levels.discard(moved)
            self.checked_top_levels.discard(x11window.resource_id(event.parent))
            if self.game_windows.pop(moved, None) is not None:
                return self._forget_focus(moved)
        return False

    def _forget_focus(self, top_level: int) -> bool:
        if self.x_focus_top_level != top_level:
            return False
        self.x_focus_top_level = None
        return True

    def _on_focus_event(self, event: rq.Event) -> bool:
        top_level = x11window.resource_id(event.window)
        if top_level not in self.game_windows or event.detail in POINTER_DETAILS:
            return False
        if event.type == X.FocusOut and event.detail == X.NotifyInferior:
            return False  # focus (or a grab) moved to a child: still inside the game
        if event.type == X.FocusIn:
            self.x_focus_top_level = top_level
            if event.mode != X.NotifyWhileGrabbed:
                self.grabbed_elsewhere = False
        elif event.mode == X.NotifyGrab:
            # Keys now go to another client's grab, though GetInputFocus still names the game.
            if not self.grabbed_elsewhere:
                self.notes.append("keyboard grabbed outside the game window while it had "
                                  "focus: input dropped until the grab ended")
            self.grabbed_elsewhere = True
        else:
            self.x_focus_top_level = None
        return True

    def polled(self, focus_top_level: int | None, active_ok: bool) -> None:
        """Take in what a poll read: the top-level holding X focus, and the active window."""
        self.x_focus_top_level = focus_top_level if focus_top_level in self.game_windows else None
        self.active_window_ok = active_ok

    def find_game_windows(self) -> None:
        """Look at new top-levels, and at those mapped or given a client since we last looked."""
        present = set(x11window.top_level_windows(self.dpy, viewable_only=False))
        self.checked_top_levels &= present
        for top_level in present - self.checked_top_levels:
            self.checked_top_levels.add(top_level)
            info = x11window.window_info(self.dpy, top_level)
            if info is not None and info.matches(self.game):
                catch = error.CatchError(error.BadWindow)
                x11window.window(self.dpy, top_level).change_attributes(
                    event_mask=X.FocusChangeMask | X.StructureNotifyMask, onerror=catch)
                self.dpy.sync()
                if not catch.get_error():
                    self.game_windows[top_level] = info

    def active_window_is_game(self, active: int | None) -> bool:
        if active is None:
            return True
        if active in self.game_windows or any(
                info.window_id == active for info in self.game_windows.values()):
            return True
        return x11window.top_level_of(self.dpy, active) in self.game_windows
