"""Test helpers for X11 windows: find a window by class, open a window of another program."""

from __future__ import annotations

from typing import Any


def window_with_class(display: str, wm_class: str) -> int:
    """Id of the top-level window whose WM_CLASS (instance or class) is `wm_class`."""
    from Xlib import display as xdisplay

    d = xdisplay.Display(display)
    try:
        for child in d.screen().root.query_tree().children:
            if wm_class in (child.get_wm_class() or ()):
                return int(child.id)
    finally:
        d.close()
    raise AssertionError(f"no window of class {wm_class}")


def other_window(display: str, x: int = 900, y: int = 500) -> tuple[Any, Any]:
    """(connection, window): a mapped window of 'another program'; close the connection after."""
    from Xlib import X
    from Xlib import display as xdisplay

    d = xdisplay.Display(display)
    screen = d.screen()
    window = screen.root.create_window(x, y, 200, 150, 0, screen.root_depth,
                                       background_pixel=screen.black_pixel,
                                       event_mask=X.KeyPressMask)
    window.set_wm_class("notthegame", "NotTheGame")
    window.map()
    d.sync()
    return d, window
