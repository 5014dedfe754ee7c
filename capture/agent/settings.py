"""The agent's settings: the `[agent]` table of the config file, every key documented."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from capture import video
from capture.config import config_path, config_table

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """Defaults here; each can be set in the `[agent]` table of capture's config.toml."""

    backend: str = "builtin"
    fps: int = 30
    idle_pause_seconds: float = 30.0
    segment_minutes: float = 10.0
    port: int = 0
    open_browser: bool = True
    display: str | None = None
    upload_delay_minutes: float = 0.0    # uploads to an enrolled collector wait this long
    upload_after_review: bool = False    # ... or until the player releases each session
    upload_kib_per_s: int = 0            # bandwidth cap of background uploads (0: none)
    keep_days_after_upload: float | None = None  # delete local copies after (None: keep)


KEY_DOCS: dict[str, str] = {
    "backend": "video backend: " + "; ".join(f'"{name}" ({entry.summary})'
                                             for name, entry in video.BACKENDS.items()),
    "fps": "frames per second to record, 1-240",
    "idle_pause_seconds": "pause video after this many seconds without any input (1-3600); the "
                          "next input resumes it",
    "segment_minutes": "start a new segment after this many minutes of recording (1-60); each "
                       "segment is its own session folder",
    "port": "port of the local page on 127.0.0.1 (0: any free port)",
    "open_browser": "open the local page in the browser when the agent starts (true/false)",
    "display": 'X display to watch, e.g. ":0" (default: $DISPLAY)',
    "upload_delay_minutes": "sessions recorded under a study you enrolled in are uploaded this "
                            "many minutes after they are finalised (0-10080), so you can "
                            "delete them first",
    "upload_after_review": "upload only the sessions you release on the page (true/false)",
    "upload_kib_per_s": "bandwidth cap of background uploads in KiB/s (0: no cap)",
    "keep_days_after_upload": "delete a local session this many days after the collector "
                              "accepted it (0-3650; leave out to keep them)",
}


def load_agent_settings(path: Path | None = None) -> AgentSettings:
    """Settings from the config file; a bad value raises CaptureError naming file and key."""
    table = config_table("agent", path)
    table.reject_unknown(set(KEY_DOCS))
    d = AgentSettings()

    def given(value: T | None, default: T) -> T:
        return default if value is None else value

    return AgentSettings(
        backend=given(table.choice("backend", video.backend_names()), d.backend),
        fps=given(table.integer("fps", 1, 240), d.fps),
        idle_pause_seconds=given(table.number("idle_pause_seconds", 1, 3600),
                                 d.idle_pause_seconds),
        segment_minutes=given(table.number("segment_minutes", 1, 60), d.segment_minutes),
        port=given(table.integer("port", 0, 65535), d.port),
        open_browser=given(table.boolean("open_browser"), d.open_browser),
        display=table.string("display") or d.display,
        upload_delay_minutes=given(table.number("upload_delay_minutes", 0, 10080),
                                   d.upload_delay_minutes),
        upload_after_review=given(table.boolean("upload_after_review"), d.upload_after_review),
        upload_kib_per_s=given(table.integer("upload_kib_per_s", 0, 10_000_000),
                               d.upload_kib_per_s),
        keep_days_after_upload=table.number("keep_days_after_upload", 0, 3650))


def check_config() -> None:
    """Read every table of the config file in use as the agent would: its own, and each video
    backend's (made with its defaults, a backend reads its table); CaptureError names the
    problem."""
    load_agent_settings()
    for name in video.backend_names():
        try:
            backend = video.backend(name)
        except ImportError:  # a backend that cannot be loaded here reads no table
            continue
        backend.create(None)


def documented_config() -> str:
    """A config file with every agent key at its default, each with its documentation.

    The file in use is checked first: a bad file raises CaptureError (naming file and key)
    rather than printing defaults that would not be what the agent runs with.
    """
    check_config()
    defaults = AgentSettings()
    path = config_path()
    state = "checked, no problems" if path.exists() else "no such file yet: all defaults"
    lines = [f"# capture config: {path} ({state})", "[agent]"]
    for key, doc in KEY_DOCS.items():
        value = getattr(defaults, key)
        shown = ("true" if value else "false") if isinstance(value, bool) else \
            (f'"{value}"' if isinstance(value, str) else ('# unset' if value is None else value))
        lines.append(f"# {doc}")
        lines.append(f"{key} = {shown}" if value is not None else f"# {key} = \":0\"")
    return "\n".join(lines) + "\n"
