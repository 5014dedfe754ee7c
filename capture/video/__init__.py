"""Video capture: backends that record the game window and log a host-clock time per frame."""

from __future__ import annotations

from capture.video._base import CaptureTarget, VideoBackend, VideoResult, VideoSettings

__all__ = ["CaptureTarget", "VideoBackend", "VideoResult", "VideoSettings", "backend"]


def backend(name: str) -> type[VideoBackend]:
    """The video backend class called `name`: builtin, or obs (records through OBS Studio)."""
    if name == "builtin":
        from capture.video.builtin import BuiltinVideoBackend

        return BuiltinVideoBackend
    if name == "obs":
        from capture.video.obs.backend import ObsVideoBackend

        return ObsVideoBackend
    raise ValueError(f"unknown video backend {name!r} (known: builtin, obs)")
