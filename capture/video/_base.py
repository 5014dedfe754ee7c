"""The video backend interface: start, pause, stop, and a frame timeline on the host clock."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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
    """Records one target into `<session_dir>/video.mkv` and `<session_dir>/frames.jsonl`.

    Every frame written to the video has one frames.jsonl record (schemas/frames.v1.arrow.json),
    in file order, with its host-clock capture time. While paused no frame is grabbed.
    """

    name: str = "base"
    # False for a backend that drives one external recorder (OBS records one file at a time):
    # a recording with it is not split into segments.
    concurrent_instances: bool = True

    @abstractmethod
    def start(self, target: CaptureTarget, session_dir: Path, settings: VideoSettings) -> None:
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
