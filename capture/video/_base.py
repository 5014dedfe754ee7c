"""The video backend interface: start, pause, stop, and a frame timeline on the host clock."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from capture.journal import TimelineJournal


@dataclass(frozen=True, slots=True)
class CaptureTarget:
    """What to grab: an X11 window (followed as it moves) or a fixed region of a display."""

    display: str | None = None        # e.g. ':99'; None = $DISPLAY
    window_id: int | None = None
    region: tuple[int, int, int, int] | None = None  # x, y, width, height


@dataclass(frozen=True, slots=True)
class VideoSettings:
    fps: int = 30
    codec: str = "libx264"
    preset: str = "ultrafast"
    crf: int = 23
    gop_seconds: float = 2.0


@dataclass(frozen=True, slots=True)
class VideoOutput:
    """Where a backend records: the video file, the frame timeline to write through, and a
    directory for the backend's own side files (e.g. an external recorder's log). The session bundle
    chooses all three."""

    video: Path
    timeline: TimelineJournal
    workdir: Path


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do, for the recorder to plan around."""

    # False for a backend that drives one external recorder that records one file at a time:
    # a recording with it is not split into segments.
    overlapping_segments: bool = True


@dataclass(frozen=True, slots=True)
class BackendStatus:
    """How the backend is doing right now, in plain words for the agent's page."""

    state: str          # "idle", "recording", "paused", "failed"
    detail: str = ""


@dataclass(slots=True)
class VideoResult:
    """What a backend reports when it stops; goes into the manifest."""

    backend: str
    frames: int = 0
    dropped_slots: int = 0
    repeated_frames: int = 0
    width: int = 0
    height: int = 0
    codec: str = ""
    container: str = "matroska"
    cpu_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend, "frames": self.frames, "dropped_slots": self.dropped_slots,
            "repeated_frames": self.repeated_frames, "width": self.width, "height": self.height,
            "codec": self.codec, "container": self.container,
            "cpu_seconds": round(self.cpu_seconds, 3), "notes": self.notes, "error": self.error,
        }


class VideoBackend(ABC):
    """Records one target into `output.video` and writes its frame timeline to `output.timeline`.

    Every frame written to the video has one timeline record (schemas/frames.v1.arrow.json), in
    file order, with its host-clock capture time. While paused no frame is grabbed.
    """

    name: ClassVar[str] = "base"
    capabilities: ClassVar[Capabilities] = Capabilities()

    @classmethod
    def create(cls, options: Any | None = None) -> VideoBackend:
        """A backend from its own settings object (None: its defaults, environment, config)."""
        return cls()

    @classmethod
    def recover(cls, output: VideoOutput) -> list[str]:
        """Rebuild what a crash left unwritten (e.g. the timeline) before a session is
        recovered; returns notes for the manifest. Nothing to do by default."""
        return []

    @abstractmethod
    def start(self, target: CaptureTarget, output: VideoOutput, settings: VideoSettings) -> None:
        """Begin recording; returns once the first frame is scheduled."""

    @abstractmethod
    def set_capturing(self, on: bool) -> None:
        """Pause (False) or resume (True) grabbing, e.g. on focus changes. Cheap, thread-safe."""

    @abstractmethod
    def stop(self) -> VideoResult:
        """Finish the file cleanly and report."""

    @abstractmethod
    def alive(self) -> bool:
        """False if the recorder died."""

    def status(self) -> BackendStatus:
        """Plain-words state for the agent's page."""
        return BackendStatus("recording" if self.alive() else "idle")
