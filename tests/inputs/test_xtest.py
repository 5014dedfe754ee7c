"""The XTEST injector: what it sends is what an X client sees."""

from __future__ import annotations

import select
import time
from collections.abc import Callable
from typing import Any

import pytest
from Xlib import XK, X, error
from Xlib.display import Display
from Xlib.protocol import rq

from capture.inputs.xtest import XTestInjector
from capture.xserver import Xvfb

pytestmark = pytest.mark.x11

MakeWindow = Callable[..., Any]  # the make_window fixture
INPUT_MASK = X.KeyPressMask | X.KeyReleaseMask | X.ButtonPressMask | X.ButtonReleaseMask


def next_events(display: Display, count: int, timeout_s: float = 2.0) -> list[rq.Event]:
    """The next `count` key or button events delivered to this connection."""
    events: list[rq.Event] = []
    deadline = time.monotonic() + timeout_s
    while len(events) < count:
        while display.pending_events() and len(events) < count:
            event = display.next_event()
            if event.type in (X.KeyPress, X.KeyRelease, X.ButtonPress, X.ButtonRelease):
                events.append(event)
        remaining = deadline - time.monotonic()
        if len(events) < count:
            assert remaining > 0, f"only {len(events)} of {count} events arrived"
            select.select([display.fileno()], [], [], remaining)
    return events


def test_focus_and_absolute_and_relative_moves(
        injector: XTestInjector, x_display: Display, make_window: MakeWindow) -> None:
    window = make_window("target", "Target", 100, 100)
    injector.focus(window.id)
    assert x_display.get_input_focus().focus.id == window.id

    root = x_display.screen().root
    injector.move_absolute(200, 150)
    position = root.query_pointer()
    assert (position.root_x, position.root_y) == (200, 150)
    injector.move_relative(37, -20)
    position = root.query_pointer()
    assert (position.root_x, position.root_y) == (237, 130)


def test_keys_reach_the_focused_window_with_their_hold_time(
        injector: XTestInjector, x_display: Display, make_window: MakeWindow) -> None:
    window = make_window("target", "Target", event_mask=INPUT_MASK)
    injector.focus(window.id)
    injector.tap("w", hold_s=0.06)
    injector.key_down("Shift_L")
    injector.key_up("Shift_L")
    press, release, shift_down, shift_up = next_events(x_display, 4)
    assert [e.type for e in (press, release, shift_down, shift_up)] == [
        X.KeyPress, X.KeyRelease, X.KeyPress, X.KeyRelease]
    assert press.detail == release.detail == x_display.keysym_to_keycode(ord("w"))
    assert shift_down.detail == x_display.keysym_to_keycode(XK.XK_Shift_L)
    assert 58 <= release.time - press.time <= 70   # X time is in ms


def test_buttons_and_wheel_clicks(
        injector: XTestInjector, x_display: Display, make_window: MakeWindow) -> None:
    window = make_window("target", "Target", 0, 0, event_mask=INPUT_MASK)
    injector.move_absolute(50, 50)  # over the window, so button events go to it
    injector.click("left")
    injector.click("forward")
    injector.click(3)
    injector.wheel(2, -1)
    injector.wheel(-1, 1)
    events = next_events(x_display, 16)
    assert all(e.window.id == window.id for e in events)
    presses = [e.detail for e in events if e.type == X.ButtonPress]
    assert presses == [1, 9, 3, 4, 4, 6, 5, 7]
    assert [e.detail for e in events if e.type == X.ButtonRelease] == presses


def test_unknown_names_are_refused(injector: XTestInjector) -> None:
    with pytest.raises(ValueError, match="no key"):
        injector.key_down("NotAKey")
    with pytest.raises(ValueError, match="unknown mouse button"):
        injector.click("thumb")


def test_close_releases_the_connection(xvfb: Xvfb) -> None:
    injector = XTestInjector(xvfb.display)
    injector.close()
    with pytest.raises(error.ConnectionClosedError):
        injector.tap("w", hold_s=0)
