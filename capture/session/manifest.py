"""The session manifest as a typed, frozen record: built, read, validated and written only here."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, cast

from capture import __version__, formats, paths
from capture.clock import CLOCK_NAME, ClockPair
from capture.errors import BadInputError
from capture.video import VideoResult

Status = Literal["recording", "complete", "recovered", "incomplete"]
FINAL_STATUSES: tuple[Status, ...] = ("complete", "recovered", "incomplete")


class ManifestVersionError(BadInputError):
    """A manifest of a schema version this capture cannot read."""


@dataclass(frozen=True, slots=True)
class ConsentRef:
    """The consent a session was recorded under."""

    receipt_id: str
    license: str
    scope: tuple[str, ...]
    synthetic: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"receipt_id": self.receipt_id, "license": self.license,
                "scope": list(self.scope), "synthetic": self.synthetic}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConsentRef:
        return cls(receipt_id=d["receipt_id"], license=d["license"], scope=tuple(d["scope"]),
                   synthetic=bool(d["synthetic"]))


@dataclass(frozen=True, slots=True)
class GameInfo:
    """The game recorded and the window that identified it."""

    name: str
    window_class: tuple[str, ...] = ()
    executable: str | None = None
    title: str = ""

    def names(self) -> set[str]:
        """Every lower-case name the game goes by (for matching a consent's games)."""
        out = {self.name.lower(), *(c.lower() for c in self.window_class)}
        if self.executable:
            out.add(self.executable.lower())
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "window_class": list(self.window_class),
                "executable": self.executable, "title": self.title}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GameInfo:
        return cls(name=d["name"], window_class=tuple(d.get("window_class", ())),
                   executable=d.get("executable"), title=d.get("title", ""))


@dataclass(frozen=True, slots=True)
class ComponentInfo:
    """What a capture component (an input backend, a gamepad reader) reported about itself."""

    name: str
    notes: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)  # component-specific, as reported

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "notes": list(self.notes), **self.details}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ComponentInfo:
        rest = {k: v for k, v in d.items() if k not in ("name", "notes")}
        return cls(name=str(d.get("name", "unknown")), notes=tuple(d.get("notes", ())),
                   details=rest)


@dataclass(frozen=True, slots=True)
class InputInfo:
    """The input backend of a session, and the gamepad reader if gamepads were recorded."""

    backend: ComponentInfo
    gamepad: ComponentInfo | None = None

    def to_dict(self) -> dict[str, Any]:
        out = self.backend.to_dict()
        if self.gamepad is not None:
            out["gamepad"] = self.gamepad.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InputInfo:
        rest = {k: v for k, v in d.items() if k != "gamepad"}
        gamepad = d.get("gamepad")
        return cls(backend=ComponentInfo.from_dict(rest),
                   gamepad=ComponentInfo.from_dict(gamepad) if isinstance(gamepad, Mapping)
                   else None)


@dataclass(frozen=True, slots=True)
class VideoReport:
    """What the video backend reported when it stopped (see capture.video.VideoResult)."""

    backend: str
    frames: int = 0
    dropped_slots: int = 0
    repeated_frames: int = 0
    width: int = 0
    height: int = 0
    codec: str = ""
    container: str = "matroska"
    cpu_seconds: float = 0.0
    notes: tuple[str, ...] = ()
    error: str | None = None

    @classmethod
    def from_result(cls, result: VideoResult) -> VideoReport:
        return cls.from_dict(result.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "frames": self.frames,
                "dropped_slots": self.dropped_slots, "repeated_frames": self.repeated_frames,
                "width": self.width, "height": self.height, "codec": self.codec,
                "container": self.container, "cpu_seconds": round(self.cpu_seconds, 3),
                "notes": list(self.notes), "error": self.error}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VideoReport:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        values["notes"] = tuple(values.get("notes", ()))
        return cls(**values)


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """The session's video file and its format."""

    file: str
    fps_target: float
    width: int = 0
    height: int = 0
    codec: str = ""
    container: str = "matroska"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "fps_target": self.fps_target, "width": self.width,
                "height": self.height, "codec": self.codec, "container": self.container}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VideoInfo:
        return cls(file=d["file"], fps_target=d["fps_target"], width=d["width"],
                   height=d["height"], codec=d["codec"], container=d.get("container", ""))


@dataclass(frozen=True, slots=True)
class ClockInfo:
    """The host clock every timestamp is on, with (monotonic, UTC) pairs at start and end."""

    start: ClockPair
    end: ClockPair | None = None
    name: str = CLOCK_NAME

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "start": self.start.to_dict(),
                "end": self.end.to_dict() if self.end else None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClockInfo:
        return cls(name=d["name"], start=ClockPair.from_dict(d["start"]),
                   end=ClockPair.from_dict(d["end"]) if d.get("end") else None)


@dataclass(frozen=True, slots=True)
class FileEntry:
    """Size and SHA-256 of one file of the bundle."""

    sha256: str
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "bytes": self.bytes}


@dataclass(frozen=True, slots=True)
class Check:
    """One record-time check of a finished segment."""

    name: str
    ok: bool
    value: Any
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "value": self.value, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class QA:
    """Quality figures computed at finalise from the frames and events actually kept."""

    duration_s: float = 0.0
    frames: int = 0
    fps_achieved: float = 0.0
    dropped_frames: int = 0
    repeated_frames: int = 0
    focused_s: float = 0.0
    idle_s: float = 0.0
    input_counts: Mapping[str, int] = field(default_factory=dict)
    recorder_cpu_s: float | None = None
    notes: tuple[str, ...] = ()
    checks: tuple[Check, ...] = ()

    @property
    def input_total(self) -> int:
        return sum(self.input_counts.values())

    @property
    def failed_checks(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "duration_s": self.duration_s, "frames": self.frames,
            "fps_achieved": self.fps_achieved, "dropped_frames": self.dropped_frames,
            "repeated_frames": self.repeated_frames, "focused_s": self.focused_s,
            "idle_s": self.idle_s, "input_counts": dict(self.input_counts)}
        if self.recorder_cpu_s is not None:
            out["recorder_cpu_s"] = self.recorder_cpu_s
        out["notes"] = list(self.notes)
        out["checks"] = [c.to_dict() for c in self.checks]
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> QA:
        return cls(duration_s=d.get("duration_s", 0.0), frames=d.get("frames", 0),
                   fps_achieved=d.get("fps_achieved", 0.0),
                   dropped_frames=d.get("dropped_frames", 0),
                   repeated_frames=d.get("repeated_frames", 0),
                   focused_s=d.get("focused_s", 0.0), idle_s=d.get("idle_s", 0.0),
                   input_counts=dict(d.get("input_counts", {})),
                   recorder_cpu_s=d.get("recorder_cpu_s"), notes=tuple(d.get("notes", ())),
                   checks=tuple(Check(**c) for c in d.get("checks", ())))


@dataclass(frozen=True, slots=True)
class Recovery:
    """What `capture sessions recover` salvaged from a crashed recording."""

    recovered_at: str
    events_journal_truncated_tail: bool = False
    frames_journal_truncated_tail: bool = False
    frames_logged: int = 0
    frames_decodable: int = 0
    last_event_ns: int | None = None
    last_frame_ns: int | None = None
    events_source: str = "journal"   # where the events came from: journal, table or none
    frames_source: str = "journal"

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Recovery:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True, slots=True)
class RunInfo:
    """Which play session (run) of the agent a segment belongs to, and its position in it."""

    id: str
    segment: int

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "segment": self.segment}


@dataclass(frozen=True, slots=True)
class Backends:
    video: VideoReport
    input: InputInfo

    def to_dict(self) -> dict[str, Any]:
        return {"video": self.video.to_dict(), "input": self.input.to_dict()}


@dataclass(frozen=True, slots=True)
class Manifest:
    """manifest.json of a session bundle (schemas/manifest.v1.schema.json)."""

    session_id: str
    status: Status
    player: str
    consent: ConsentRef
    game: GameInfo
    backend: Backends
    video: VideoInfo
    clock: ClockInfo
    files: Mapping[str, FileEntry] = field(default_factory=dict)
    qa: QA | None = None
    recovery: Recovery | None = None
    error: str | None = None
    run: RunInfo | None = None
    app_version: str = __version__
    schema_version: int = formats.MANIFEST_VERSION

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def video_backend(self) -> str:
        return self.backend.video.backend

    def updated(self, **changes: Any) -> Manifest:
        """A copy with `changes` applied (the record itself never changes)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema_version": self.schema_version, "app_version": self.app_version,
            "session_id": self.session_id, "status": self.status, "player": self.player,
            "consent": self.consent.to_dict(), "game": self.game.to_dict(),
            "backend": self.backend.to_dict(), "video": self.video.to_dict(),
            "clock": self.clock.to_dict(),
            "files": {name: entry.to_dict() for name, entry in self.files.items()},
            "qa": self.qa.to_dict() if self.qa is not None else {},
            "recovery": self.recovery.to_dict() if self.recovery is not None else None,
            "error": self.error,
        }
        if self.run is not None:
            out["run"] = self.run.to_dict()
        formats.validate_json(out, formats.MANIFEST_SCHEMA)
        return out

    @classmethod
    def from_dict(cls, d: Any, path: Path | str | None = None) -> Manifest:
        """Check the version and the schema, then build the record; BadInputError names `path`."""
        if not isinstance(d, dict):
            raise BadInputError("manifest is not a JSON object", path)
        version = d.get("schema_version")
        if version != formats.MANIFEST_VERSION:
            raise ManifestVersionError(
                f"manifest schema_version is {version!r}; this capture {__version__} reads "
                f"version {formats.MANIFEST_VERSION}. "
                + (f"Upgrade capture to read sessions of version {version}."
                   if isinstance(version, int) and version > formats.MANIFEST_VERSION else
                   "To migrate, re-record it or rewrite manifest.json to the version "
                   f"{formats.MANIFEST_VERSION} schema in schemas/{formats.MANIFEST_SCHEMA}."),
                path)
        formats.validate_json(d, formats.MANIFEST_SCHEMA, path)
        try:
            return cls._build(d, version)
        except (KeyError, TypeError, ValueError) as exc:  # what the schema leaves open
            raise BadInputError(f"manifest does not fit its record ({exc!r})", path) from None

    @classmethod
    def _build(cls, d: dict[str, Any], version: int) -> Manifest:
        qa = d.get("qa") or None
        return cls(
            schema_version=version, app_version=d["app_version"], session_id=d["session_id"],
            status=cast(Status, d["status"]), player=d["player"],
            consent=ConsentRef.from_dict(d["consent"]), game=GameInfo.from_dict(d["game"]),
            backend=Backends(video=VideoReport.from_dict(d["backend"]["video"]),
                             input=InputInfo.from_dict(d["backend"]["input"])),
            video=VideoInfo.from_dict(d["video"]), clock=ClockInfo.from_dict(d["clock"]),
            files={name: FileEntry(**entry) for name, entry in d["files"].items()},
            qa=QA.from_dict(qa) if qa else None,
            recovery=Recovery.from_dict(d["recovery"]) if d.get("recovery") else None,
            error=d.get("error"),
            run=RunInfo(**d["run"]) if d.get("run") else None)


def read_manifest(session_dir: Path | str) -> Manifest:
    """The manifest of a session directory; BadInputError naming the file for every problem."""
    session_dir = Path(session_dir)
    path = session_dir / formats.MANIFEST
    if not session_dir.is_dir():
        raise BadInputError("is not a session directory", session_dir)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BadInputError("manifest.json is missing: not a session directory", path) from None
    except OSError as exc:
        raise BadInputError(f"manifest cannot be read ({exc.strerror})", path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(f"manifest is not UTF-8 text (bad byte at offset {exc.start}): "
                            "the file is damaged", path) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInputError(f"manifest is not valid JSON ({exc.msg} at line {exc.lineno})",
                            path) from None
    except RecursionError:
        raise BadInputError("manifest is nested too deeply to be a manifest", path) from None
    return Manifest.from_dict(data, path)


def write_manifest(session_dir: Path, manifest: Manifest) -> None:
    """Validate, then replace manifest.json atomically (a crash leaves the old or the new one)."""
    path = session_dir / formats.MANIFEST
    data = manifest.to_dict()
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    paths.fsync_dir(session_dir)
