"""Scripted X11 input through XTEST, for tests, the demo's scripted player and benchmarks."""

from __future__ import annotations

import time
from types import TracebackType

from Xlib import XK, X
from Xlib.display import Display
from Xlib.ext import xtest

from capture.inputs._xi2 import BUTTON_NUMBERS

WHEEL_UP, WHEEL_DOWN, WHEEL_LEFT, WHEEL_RIGHT = 4, 5, 6, 7


class XTestInjector:
    """Injects key, button, wheel and motion input as if from a device; every call is synced.

    Relative moves go through the XTEST pointer and show up as XInput2 raw motion with exactly
    the given deltas. Absolute moves warp the pointer (as `xdotool mousemove` does), which moves
    the cursor but produces no raw motion.
    """

    def __init__(self, display: str | None = None) -> None:
        self._display = Display(display)
        if not self._display.has_extension("XTEST"):
            self._display.close()
            raise RuntimeError(f"X server {display or ''} has no XTEST extension")
        self._root = self._display.screen().root

    def key_down(self, name: str) -> None:
        self._fake(X.KeyPress, self._keycode(name))

    def key_up(self, name: str) -> None:
        self._fake(X.KeyRelease, self._keycode(name))

    def tap(self, name: str, hold_s: float = 0.05) -> None:
        """Press and release a key, holding it for `hold_s` seconds."""
        self.key_down(name)
        time.sleep(hold_s)
        self.key_up(name)

    def button_down(self, button: int | str) -> None:
        self._fake(X.ButtonPress, _button_number(button))

    def button_up(self, button: int | str) -> None:
        self._fake(X.ButtonRelease, _button_number(button))

    def click(self, button: int | str = "left") -> None:
        self.button_down(button)
        self.button_up(button)

    def move_relative(self, dx: int, dy: int, *, sync: bool = True) -> None:
        """Move the pointer by (dx, dy) device units; `sync=False` only queues it (for bursts)."""
        xtest.fake_input(self._display, X.MotionNotify, detail=True, x=dx, y=dy)
        if sync:
            self._display.sync()

    def move_absolute(self, x: int, y: int) -> None:
        self._root.warp_pointer(x, y)
        self._display.sync()

    def wheel(self, clicks_vertical: int, clicks_horizontal: int = 0) -> None:
        """Scroll: positive vertical is up (button 4), positive horizontal is right (button 7)."""
        vertical = WHEEL_UP if clicks_vertical > 0 else WHEEL_DOWN
        horizontal = WHEEL_RIGHT if clicks_horizontal > 0 else WHEEL_LEFT
        for button, clicks in ((vertical, abs(clicks_vertical)),
                               (horizontal, abs(clicks_horizontal))):
            for _ in range(clicks):
                xtest.fake_input(self._display, X.ButtonPress, button)
                xtest.fake_input(self._display, X.ButtonRelease, button)
        self._display.sync()

    def focus(self, window_id: int) -> None:
        """Give a window the input focus (what a window manager does on click or alt-tab)."""
        win = self._display.create_resource_object("window", window_id)
        win.set_input_focus(X.RevertToParent, X.CurrentTime)
        self._display.sync()

    def flush(self) -> None:
        """Send queued requests without waiting for the server (pairs with `sync=False`)."""
        self._display.flush()

    def sync(self) -> None:
        self._display.sync()

    def close(self) -> None:
        self._display.close()

    def __enter__(self) -> XTestInjector:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _fake(self, event_type: int, detail: int) -> None:
        xtest.fake_input(self._display, event_type, detail)
        self._display.sync()

    def _keycode(self, name: str) -> int:
        keysym = XK.string_to_keysym(name)
        if keysym == X.NoSymbol and len(name) == 1:
            keysym = ord(name)
        keycode = self._display.keysym_to_keycode(keysym) if keysym != X.NoSymbol else 0
        if not keycode:
            raise ValueError(f"no key {name!r} in this X server's keymap")
        return keycode


def _button_number(button: int | str) -> int:
    if isinstance(button, int):
        return button
    if button in BUTTON_NUMBERS:
        return BUTTON_NUMBERS[button]
    if button.startswith("button") and button[6:].isdigit():
        return int(button[6:])
    raise ValueError(f"unknown mouse button {button!r}")
