"""Input capture: keyboard, mouse (raw deltas), focus; one backend per platform behind one API."""

from __future__ import annotations

import os
import sys

from capture.inputs._base import (
    HOLDS,
    EventKind,
    EventSink,
    FocusSink,
    FocusState,
    InputBackend,
    InputEvent,
    WindowInfo,
)

__all__ = ["HOLDS", "EventKind", "EventSink", "FocusSink", "FocusState", "InputBackend",
           "InputEvent", "WindowInfo", "backend"]


def backend() -> type[InputBackend]:
    """The input backend class for this platform (override with CAPTURE_INPUT_BACKEND)."""
    name = os.environ.get("CAPTURE_INPUT_BACKEND") or (
        "win32" if sys.platform == "win32" else "xorg"
    )
    if name == "xorg":
        try:
            from capture.inputs._xorg import XorgInputBackend
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise ImportError(
                f"X11 input needs python-xlib ({exc}); pip install python-xlib") from exc
        return XorgInputBackend
    if name == "win32":
        try:
            from capture.inputs._win32 import Win32InputBackend
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise ImportError(
                f"Windows input needs ctypes with the Win32 DLLs ({exc}); use CPython for Windows"
            ) from exc
        return Win32InputBackend
    raise ImportError(f"no input backend {name!r} on {sys.platform} (known: xorg, win32)")
