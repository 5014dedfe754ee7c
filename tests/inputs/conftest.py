"""Fixtures for X11 input tests: plain python-xlib windows and an XTEST injector on Xvfb."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from Xlib import X, error
from Xlib.display import Display
from Xlib.xobject.drawable import Window

from capture.inputs.xtest import XTestInjector
from capture.xserver import Xvfb

MakeWindow = Callable[..., Window]


@pytest.fixture
def x_display(xvfb: Xvfb) -> Iterator[Display]:
    display = Display(xvfb.display)
    yield display
    display.close()


@pytest.fixture
def make_window(x_display: Display) -> Iterator[MakeWindow]:
    """Create mapped top-level windows with a WM_CLASS; all are destroyed after the test."""
    created: list[Window] = []

    def make(instance: str, class_name: str, x: int = 0, y: int = 0,
             event_mask: int = 0) -> Window:
        window = x_display.screen().root.create_window(
            x, y, 320, 240, 0, X.CopyFromParent, X.InputOutput, X.CopyFromParent,
            event_mask=event_mask)
        window.set_wm_class(instance, class_name)
        window.set_wm_name(class_name)
        window.map()
        x_display.sync()
        created.append(window)
        return window

    yield make
    for window in created:
        window.destroy(onerror=error.CatchError(error.BadWindow))  # a test may have done it
    x_display.sync()


@pytest.fixture
def injector(xvfb: Xvfb) -> Iterator[XTestInjector]:
    with XTestInjector(xvfb.display) as inject:
        yield inject


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    leaked = [t.name for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"
