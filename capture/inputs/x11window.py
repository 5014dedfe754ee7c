"""X11 window lookup: top-level windows, WM_CLASS, owning process, geometry and input focus."""

from __future__ import annotations

from collections import deque

import psutil
from Xlib import X, Xatom, error
from Xlib.display import Display
from Xlib.xobject.drawable import Window

from capture.inputs._base import WindowInfo

# Window-manager frames put the client window (the one with WM_CLASS) one or two levels down.
CLIENT_SEARCH_DEPTH = 3

_WINDOW_GONE = (error.BadWindow, error.BadDrawable, error.BadMatch)


def window(display: Display, window_id: int) -> Window:
    """The python-xlib object for a window id."""
    return display.create_resource_object("window", window_id)


def resource_id(value: Window | int | None) -> int:
    """A window's id; python-xlib gives plain ints for None, PointerRoot and the like."""
    if value is None:
        return int(X.NONE)
    return value if isinstance(value, int) else int(value.id)


def top_level_windows(display: Display, *, viewable_only: bool = True) -> list[int]:
    """Ids of the root window's children (window-manager frames or bare clients), bottom first."""
    root = display.screen().root
    ids = []
    for child in root.query_tree().children:
        if viewable_only:
            try:
                if child.get_attributes().map_state != X.IsViewable:
                    continue
            except _WINDOW_GONE:
                continue
        ids.append(child.id)
    return ids


def top_level_of(display: Display, window_id: int) -> int | None:
    """The child of the root that contains `window_id` (itself if it is one); None for the root."""
    root_id = display.screen().root.id
    current = window_id
    try:
        while current != root_id:
            parent = resource_id(window(display, current).query_tree().parent)
            if parent in (X.NONE, root_id):
                return current if parent == root_id else None
            current = parent
    except _WINDOW_GONE:
        return None
    return None


def client_window(display: Display, top_level_id: int) -> tuple[int, tuple[str, ...]] | None:
    """The first window at or below `top_level_id` that has WM_CLASS, with that class."""
    queue = deque([(top_level_id, 0)])
    while queue:
        window_id, depth = queue.popleft()
        try:
            win = window(display, window_id)
            wm_class = win.get_wm_class()
            if wm_class:
                return window_id, tuple(wm_class)
            if depth < CLIENT_SEARCH_DEPTH:
                queue.extend((child.id, depth + 1) for child in win.query_tree().children)
        except _WINDOW_GONE:
            continue
    return None


def window_geometry(display: Display, window_id: int) -> tuple[int, int, int, int]:
    """(x, y, width, height) of a window in root coordinates; zeros if the window is gone."""
    try:
        win = window(display, window_id)
        geometry = win.get_geometry()
        origin = win.translate_coords(display.screen().root, 0, 0)
    except _WINDOW_GONE:
        return (0, 0, 0, 0)
    # translate_coords gives where the root origin lies in the window, hence the minus signs.
    return (-origin.x, -origin.y, geometry.width, geometry.height)


def process_name(pid: int) -> str | None:
    """The executable name of a local process, or None if it is gone or not ours to inspect."""
    try:
        return psutil.Process(pid).name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def window_info(display: Display, top_level_id: int) -> WindowInfo | None:
    """What identifies the game behind a top-level window; None if it has no WM_CLASS anywhere."""
    found = client_window(display, top_level_id)
    if found is None:
        return None
    client_id, wm_class = found
    win = window(display, client_id)
    try:
        title = _title(display, win)
        pid_property = win.get_full_property(display.intern_atom("_NET_WM_PID"), Xatom.CARDINAL)
    except _WINDOW_GONE:
        return None
    pid = int(pid_property.value[0]) if pid_property and len(pid_property.value) else None
    return WindowInfo(
        window_id=client_id,
        wm_class=wm_class,
        title=title,
        pid=pid,
        executable=process_name(pid) if pid else None,
        geometry=window_geometry(display, client_id),
    )


def _title(display: Display, win: Window) -> str:
    net_name = win.get_full_property(display.intern_atom("_NET_WM_NAME"),
                                     display.intern_atom("UTF8_STRING"))
    if net_name and net_name.value:
        value = net_name.value
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    name = win.get_wm_name()
    return name.decode("latin-1") if isinstance(name, bytes) else (name or "")


def find_window(display: Display, game: str) -> tuple[int, WindowInfo] | None:
    """The topmost viewable top-level window matching `game`, as (top-level id, info)."""
    for top_level_id in reversed(top_level_windows(display)):
        info = window_info(display, top_level_id)
        if info is not None and info.matches(game):
            return top_level_id, info
    return None


def active_window(display: Display) -> int | None:
    """_NET_ACTIVE_WINDOW on the root, or None if no window manager sets it (or it is 0)."""
    prop = display.screen().root.get_full_property(
        display.intern_atom("_NET_ACTIVE_WINDOW"), Xatom.WINDOW)
    if prop is None or not len(prop.value) or not prop.value[0]:
        return None
    return int(prop.value[0])


def focused_top_level(display: Display) -> int | None:
    """The top-level window holding X input focus; None for no focus, PointerRoot or the root."""
    return top_level_of_focus(display, display.get_input_focus().focus)


def top_level_of_focus(display: Display, focus: Window | int) -> int | None:
    """The top-level window containing a GetInputFocus answer (None, PointerRoot: None)."""
    focus_id = resource_id(focus)
    if focus_id in (X.NONE, X.PointerRoot):
        return None
    return top_level_of(display, focus_id)
