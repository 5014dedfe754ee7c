"""Video capture: backends that record the game window and log a host-clock time per frame."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from capture.video._base import (
    BackendStatus,
    Capabilities,
    CaptureTarget,
    VideoBackend,
    VideoOutput,
    VideoResult,
    VideoSettings,
)

__all__ = ["BACKENDS", "BackendStatus", "Capabilities", "CaptureTarget", "VideoBackend",
           "VideoOutput", "VideoResult", "VideoSettings", "backend", "backend_names"]


@dataclass(frozen=True, slots=True)
class _Entry:
    module: str
    cls: str
    summary: str
    hint: str
    config_table: str | None = None  # the backend's own table in the config file


# Every video backend, listed once: the CLI, the config file and the recorder read this.
BACKENDS: dict[str, _Entry] = {
    "builtin": _Entry("capture.video.builtin", "BuiltinVideoBackend",
                      "capture grabs the game window itself (X11)",
                      "it needs mss, PyAV and python-xlib: pip install 'capture[...]' again"),
    "obs": _Entry("capture.video.obs.backend", "ObsVideoBackend",
                  "OBS Studio records, over its websocket",
                  "it needs obs-websocket-py: pip install obs-websocket-py",
                  config_table="obs"),
}


def backend_names() -> tuple[str, ...]:
    return tuple(BACKENDS)


def backend(name: str) -> type[VideoBackend]:
    """The video backend class called `name` (see BACKENDS)."""
    entry = BACKENDS.get(name)
    if entry is None:
        raise ValueError(f"unknown video backend {name!r} (known: {', '.join(BACKENDS)})")
    try:
        module = importlib.import_module(entry.module)
    except ImportError as exc:
        raise ImportError(f"the {name} video backend cannot be loaded ({exc}); {entry.hint}") \
            from exc
    cls: type[VideoBackend] = getattr(module, entry.cls)
    return cls
