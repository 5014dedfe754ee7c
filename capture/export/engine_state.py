"""The export state file (meta/capture_export.json): settings and sessions of a dataset's export."""

# A re-run into the same dataset reads it: sessions whose manifest SHA-256 is unchanged are not
# decoded or encoded again (their episodes' packets are copied out of the dataset's own videos),
# new sessions are appended after them, and everything else is rewritten, so the result is the
# dataset a from-scratch export of all the sessions would make.

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from capture import formats
from capture.errors import BadInputError
from capture.export import layout

STATE_PATH = "meta/capture_export.json"
STATE_SCHEMA = "dataset-export-state.v1.schema.json"
STATE_FORMAT = "capture-export-state"


@dataclass(frozen=True, slots=True)
class ExportSettings:
    """Everything that shapes the dataset besides its sessions."""

    fps: int
    width: int
    height: int
    codec: str
    gop: int
    crf: int
    preset: str | int
    max_episode_s: float
    data_mb: float
    video_mb: float
    chunks_size: int

    @classmethod
    def of(cls, *, fps: int, width: int, height: int, encoding: layout.VideoEncoding,
           max_episode_s: float, limits: layout.FileLimits) -> ExportSettings:
        return cls(fps=fps, width=width, height=height, codec=encoding.codec, gop=encoding.gop,
                   crf=encoding.quality, preset=encoding.speed,
                   max_episode_s=float(max_episode_s), data_mb=float(limits.data_mb),
                   video_mb=float(limits.video_mb), chunks_size=limits.chunks_size)

    def differences(self, other: ExportSettings) -> list[str]:
        mine, theirs = asdict(self), asdict(other)
        return [f"{key} {theirs[key]!r} (now {mine[key]!r})" for key in mine
                if mine[key] != theirs[key]]


@dataclass(frozen=True, slots=True)
class ExportedSession:
    session_id: str
    manifest_sha256: str
    first_episode: int
    episodes: int
    frames: int


@dataclass(frozen=True, slots=True)
class ExportState:
    settings: ExportSettings
    sessions: tuple[ExportedSession, ...]

    def to_json(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "version": 1, "settings": asdict(self.settings),
                "sessions": [asdict(s) for s in self.sessions]}


def manifest_sha256(session_dir: Path) -> str:
    return hashlib.sha256((session_dir / formats.MANIFEST).read_bytes()).hexdigest()


def read_state(path: Path) -> ExportState:
    """The state file at `path`, checked against its schema; BadInputError names it if bad."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"export state cannot be read ({exc})", path) from None
    formats.validate_json(doc, STATE_SCHEMA, path)
    return ExportState(settings=ExportSettings(**doc["settings"]),
                       sessions=tuple(ExportedSession(**s) for s in doc["sessions"]))


def write_state(path: Path, state: ExportState) -> None:
    doc = state.to_json()
    formats.validate_json(doc, STATE_SCHEMA, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
