"""Window lookup on a real Xvfb, including a window-manager-style frame around the client."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from Xlib import X, Xatom
from Xlib.display import Display

from capture.inputs import x11window
from capture.inputs.xtest import XTestInjector

pytestmark = pytest.mark.x11

MakeWindow = Callable[..., Any]  # the make_window fixture


def framed_client(display: Display, make_window: MakeWindow) -> tuple[Any, Any]:
    """A frame without WM_CLASS holding a client that has one, as a reparenting WM makes."""
    frame = make_window("", "", 100, 50)
    frame.delete_property(Xatom.WM_CLASS)
    client = frame.create_window(4, 20, 200, 100, 0, X.CopyFromParent, X.InputOutput,
                                 X.CopyFromParent)
    client.set_wm_class("framedgame", "FramedGame")
    client.change_property(display.intern_atom("_NET_WM_PID"), Xatom.CARDINAL, 32, [os.getpid()])
    client.map()
    display.sync()
    return frame, client


def test_framed_client_is_found_with_its_process_and_geometry(
        x_display: Display, make_window: MakeWindow) -> None:
    frame, client = framed_client(x_display, make_window)
    assert x11window.top_level_of(x_display, client.id) == frame.id
    assert x11window.top_level_of(x_display, frame.id) == frame.id
    assert x11window.top_level_of(x_display, x_display.screen().root.id) is None
    assert x11window.window_geometry(x_display, client.id) == (104, 70, 200, 100)

    found = x11window.find_window(x_display, "framedgame")
    assert found is not None
    top_level, info = found
    assert top_level == frame.id and info.window_id == client.id
    assert info.wm_class == ("framedgame", "FramedGame") and info.pid == os.getpid()
    assert info.executable and x11window.find_window(x_display, info.executable)


def test_focus_maps_to_the_top_level_and_pointer_root_to_none(
        x_display: Display, make_window: MakeWindow, injector: XTestInjector) -> None:
    frame, client = framed_client(x_display, make_window)
    injector.focus(client.id)
    assert x11window.focused_top_level(x_display) == frame.id
    x_display.set_input_focus(X.PointerRoot, X.RevertToPointerRoot, X.CurrentTime)
    x_display.sync()
    assert x11window.focused_top_level(x_display) is None


def test_gone_windows_and_missing_properties_are_not_errors(x_display: Display) -> None:
    assert x11window.window_geometry(x_display, 0x3FFFFF) == (0, 0, 0, 0)
    assert x11window.window_info(x_display, 0x3FFFFF) is None
    assert x11window.top_level_of(x_display, 0x3FFFFF) is None
    assert x11window.active_window(x_display) is None
