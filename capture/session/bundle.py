"""The session bundle on disk: create, finalise, recover and open a session directory."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import secrets
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
import pyarrow as pa
import pyarrow.parquet as pq

from capture import __version__, formats
from capture.clock import CLOCK_NAME, ClockPair, utc_iso
from capture.errors import BadInputError, CaptureError
from capture.journal import JournalDamage, read_journal
from capture.session.checks import run_checks

IDLE_GAP_NS = 2_000_000_000  # a gap this long without any input counts as idle time
FINAL_STATUSES = ("complete", "recovered", "incomplete")


def new_session_id(game: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    safe_game = "".join(c if c.isalnum() or c in "-_" else "-" for c in game.lower())[:32]
    return f"{stamp}-{safe_game}-{secrets.token_hex(3)}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- manifest -----------------------------------------------------------------------------------
def write_manifest(session_dir: Path, manifest: dict[str, Any]) -> None:
    """Validate against schemas/manifest.v1.schema.json, then replace manifest.json atomically."""
    path = session_dir / formats.MANIFEST
    formats.validate_json(manifest, formats.MANIFEST_SCHEMA, path)
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_manifest(session_dir: Path) -> dict[str, Any]:
    path = Path(session_dir) / formats.MANIFEST
    if not Path(session_dir).is_dir():
        raise BadInputError("is not a session directory", session_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInputError("manifest.json is missing: not a session directory", path) from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInputError(f"manifest is not valid JSON ({exc.msg} at line {exc.lineno})",
                            path) from None
    if not isinstance(manifest, dict):
        raise BadInputError("manifest is not a JSON object", path)
    version = manifest.get("schema_version")
    if version != formats.MANIFEST_VERSION:
        raise BadInputError(
            f"manifest schema_version is {version!r}; this capture {__version__} reads version "
            f"{formats.MANIFEST_VERSION} (upgrade capture to read newer sessions)", path)
    formats.validate_json(manifest, formats.MANIFEST_SCHEMA, path)
    return manifest


def initial_manifest(*, session_id: str, player: str, receipt: Any, game: str,
                     window: Any | None, video_backend: str, input_info: dict[str, Any],
                     fps: int, start: ClockPair) -> dict[str, Any]:
    """The manifest written when recording starts (status 'recording')."""
    return {
        "schema_version": formats.MANIFEST_VERSION,
        "app_version": __version__,
        "session_id": session_id,
        "status": "recording",
        "player": player,
        "consent": {
            "receipt_id": receipt.receipt_id, "license": receipt.license,
            "scope": sorted(receipt.scope), "synthetic": bool(receipt.synthetic),
        },
        "game": {
            "name": game,
            "window_class": list(window.wm_class) if window else [],
            "executable": window.executable if window else None,
            "title": window.title if window else "",
        },
        "backend": {"video": {"backend": video_backend}, "input": input_info},
        "video": {"file": formats.VIDEO, "fps_target": fps, "width": 0, "height": 0,
                  "codec": "", "container": "matroska"},
        "clock": {"name": CLOCK_NAME, "start": start.to_dict(), "end": None},
        "files": {},
        "qa": {},
        "recovery": None,
        "error": None,
    }


# --- journals -> tables -------------------------------------------------------------------------
def _journal_to_table(journal: Path, schema: pa.Schema, *, salvage: bool,
                      damage: JournalDamage | None = None) -> pa.Table:
    rows = list(read_journal(journal, salvage=salvage, damage=damage)) if journal.exists() else []
    try:
        return formats.table_from_rows(rows, schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
        raise BadInputError(f"journal records do not fit {schema.metadata[b'schema'].decode()}: "
                            f"{exc}", journal) from None


def _write_table(table: pa.Table, path: Path, schema: pa.Schema) -> None:
    formats.validate_table(table, schema, path)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def count_decodable_frames(video: Path) -> int:
    """Frames PyAV can decode from the file (a crash may cut the last cluster)."""
    frames = 0
    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            try:
                for _ in container.decode(stream):
                    frames += 1
            except av.error.FFmpegError:
                pass  # the cut-off tail of a crashed recording; everything before it counts
    except (av.error.FFmpegError, IndexError) as exc:
        raise BadInputError(f"video cannot be opened ({exc})", video) from None
    return frames


# --- QA -----------------------------------------------------------------------------------------
def quality_summary(events: pa.Table, frames: pa.Table, fps_target: float,
                    start_ns: int, end_ns: int) -> dict[str, Any]:
    times = frames.column("capture_time_ns").to_numpy() if frames.num_rows else []
    missed = frames.column("dropped_before").to_pylist() if frames.num_rows else []
    n = len(times)
    interval_ns = 1e9 / fps_target
    capturing_ns = 0.0
    steps = 0
    for (a, b), dropped_before in zip(itertools.pairwise(times), missed[1:], strict=True):
        gap = b - a
        # A gap the recorder did not account for with missed slots is a pause (focus lost),
        # the rule alignment uses (align.continuous_runs). Frames and time are counted over the
        # same steps: OBS under render lag repeats a picture at one time, then jumps by the
        # render gap (with dropped_before), and counting those frames but not that time gave
        # fps_achieved 1076.8 (issue 8).
        if gap - dropped_before * interval_ns <= 3 * interval_ns:
            capturing_ns += gap
            steps += 1
    fps_achieved = steps / (capturing_ns / 1e9) if steps and capturing_ns > 0 else 0.0
    kinds = Counter(events.column("kind").to_pylist()) if events.num_rows else Counter()
    event_times = sorted(events.column("t_ns").to_pylist()) if events.num_rows else []
    idle_ns = 0
    bounds = [start_ns, *event_times, end_ns]
    for a, b in itertools.pairwise(bounds):
        if b - a >= IDLE_GAP_NS:
            idle_ns += b - a
    focused_ns = 0
    focus_since: int | None = None
    if events.num_rows:
        for kind, t in zip(events.column("kind").to_pylist(), events.column("t_ns").to_pylist(),
                           strict=True):
            if kind == "focus_in" and focus_since is None:
                focus_since = t
            elif kind == "focus_out" and focus_since is not None:
                focused_ns += t - focus_since
                focus_since = None
    if focus_since is not None:
        focused_ns += max(0, end_ns - focus_since)
    dropped = int(sum(frames.column("dropped_before").to_pylist())) if n else 0
    repeated = int(sum(frames.column("repeated").to_pylist())) if n else 0
    return {
        "duration_s": round(max(0, end_ns - start_ns) / 1e9, 3),
        "frames": n,
        "fps_achieved": round(fps_achieved, 3),
        "dropped_frames": dropped,
        "repeated_frames": repeated,
        "focused_s": round(focused_ns / 1e9, 3),
        "idle_s": round(idle_ns / 1e9, 3),
        "input_counts": dict(sorted(kinds.items())),
    }


# --- finalise / recover -------------------------------------------------------------------------
def finalise(session_dir: Path, *, status: str = "complete", video_result: dict | None = None,
             end: ClockPair | None = None, salvage: bool = False,
             recovery: dict[str, Any] | None = None, error: str | None = None,
             input_info: dict[str, Any] | None = None,
             frames_before_ns: int | None = None) -> dict[str, Any]:
    """Turn journals into validated Parquet tables, hash every file, write the final manifest."""
    manifest = read_manifest(session_dir)
    events_damage, frames_damage = JournalDamage(), JournalDamage()
    events_schema = formats.arrow_schema(formats.EVENTS_SCHEMA)
    frames_schema = formats.arrow_schema(formats.FRAMES_SCHEMA)
    events = _journal_to_table(session_dir / formats.EVENTS_JOURNAL, events_schema,
                               salvage=salvage, damage=events_damage)
    frames = _journal_to_table(session_dir / formats.FRAMES_JOURNAL, frames_schema,
                               salvage=salvage, damage=frames_damage)
    events = events.sort_by([("t_ns", "ascending")])
    trailing = 0
    if frames_before_ns is not None:
        # A segment hand-over: frames from the boundary on belong to the next segment. They
        # stay at the end of this video file but are not part of this segment's timeline.
        kept = sum(1 for t in frames.column("capture_time_ns").to_pylist() if t < frames_before_ns)
        trailing = frames.num_rows - kept
        frames = frames.slice(0, kept)
    video = session_dir / formats.VIDEO
    if recovery is not None:
        decodable = count_decodable_frames(video) if video.exists() else 0
        recovery.update({
            "frames_logged": frames.num_rows, "frames_decodable": decodable,
            "events_journal_truncated_tail": events_damage.truncated_tail,
            "frames_journal_truncated_tail": frames_damage.truncated_tail,
        })
        frames = frames.slice(0, min(frames.num_rows, decodable))
        recovery["last_event_ns"] = events.column("t_ns")[-1].as_py() if events.num_rows else None
        recovery["last_frame_ns"] = (frames.column("capture_time_ns")[-1].as_py()
                                     if frames.num_rows else None)
        manifest["recovery"] = recovery
    _write_table(events, session_dir / formats.EVENTS_TABLE, events_schema)
    _write_table(frames, session_dir / formats.FRAMES_TABLE, frames_schema)
    for journal in (formats.EVENTS_JOURNAL, formats.FRAMES_JOURNAL):
        with contextlib.suppress(FileNotFoundError):
            (session_dir / journal).unlink()

    if end is None:
        last_times = [t for t in (
            events.column("t_ns")[-1].as_py() if events.num_rows else None,
            frames.column("capture_time_ns")[-1].as_py() if frames.num_rows else None,
        ) if t is not None]
        start = ClockPair.from_dict(manifest["clock"]["start"])
        end_ns = max([start.monotonic_ns, *last_times])
        offset = datetime.fromisoformat(start.utc.replace("Z", "+00:00")).timestamp()
        end_wall = datetime.fromtimestamp(offset + (end_ns - start.monotonic_ns) / 1e9, UTC)
        end = ClockPair(monotonic_ns=end_ns, utc=utc_iso(end_wall))
    manifest["clock"]["end"] = end.to_dict()
    if input_info is not None:
        manifest["backend"]["input"] = input_info
    if video_result:
        manifest["backend"]["video"] = video_result
        for key in ("width", "height", "codec"):
            if video_result.get(key):
                manifest["video"][key] = video_result[key]
    if frames.num_rows and not manifest["video"]["width"] and video.exists():
        with contextlib.suppress(av.error.FFmpegError), av.open(str(video)) as c:
            s = c.streams.video[0]
            manifest["video"].update(width=s.width, height=s.height, codec=s.codec_context.name)
    qa = quality_summary(events, frames, manifest["video"]["fps_target"],
                         manifest["clock"]["start"]["monotonic_ns"], end.monotonic_ns)
    if video_result:
        qa["recorder_cpu_s"] = float(video_result.get("cpu_seconds", 0.0))
        qa["dropped_frames"] = max(qa["dropped_frames"], int(video_result.get("dropped_slots", 0)))
    qa["notes"] = list((video_result or {}).get("notes", []))
    if trailing:
        qa["notes"].append(f"{trailing} frame(s) at the end of the video belong to the next "
                           "segment (recorded during the hand-over) and are not in this timeline")
    qa["checks"] = run_checks(qa, manifest["video"]["fps_target"], video,
                              frames.column("pts").to_pylist())
    manifest["qa"] = qa
    manifest["files"] = hash_files(session_dir)
    manifest["status"] = status
    manifest["error"] = error
    write_manifest(session_dir, manifest)
    with contextlib.suppress(FileNotFoundError):
        (session_dir / formats.LOCK).unlink()
    return manifest


def hash_files(session_dir: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(session_dir.iterdir()):
        if path.is_file() and path.name not in (formats.MANIFEST, formats.LOCK) \
                and not path.name.endswith(".tmp"):
            out[path.name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return out


def recorder_pid(session_dir: Path) -> int | None:
    try:
        return int((session_dir / formats.LOCK).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def needs_recovery(session_dir: Path) -> bool:
    """True for a session still marked 'recording' whose recorder process is gone."""
    try:
        manifest = read_manifest(session_dir)
    except BadInputError:
        return False
    if manifest["status"] != "recording":
        return False
    pid = recorder_pid(session_dir)
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def recover(session_dir: Path) -> dict[str, Any]:
    """Finalise a session whose recorder died: salvage journals, keep only decodable frames."""
    if not needs_recovery(session_dir):
        manifest = read_manifest(session_dir)
        raise CaptureError(f"session is '{manifest['status']}', not a crashed recording "
                           "(nothing to recover)", session_dir)
    manifest = read_manifest(session_dir)
    if (manifest["backend"]["video"].get("backend") == "obs"
            and not (session_dir / formats.FRAMES_JOURNAL).exists()):
        # OBS sessions get their frame timeline at stop; rebuild it from OBS's clock log.
        from capture.video.obs.backend import recover_frames_journal

        recover_frames_journal(session_dir)
    return finalise(session_dir, status="recovered", salvage=True,
                    recovery={"recovered_at": utc_iso()},
                    error="recorder stopped without finalising; recovered")


# --- reading a finished session -----------------------------------------------------------------
@dataclass
class Session:
    """A finalised session bundle, checked on open."""

    path: Path
    manifest: dict[str, Any]
    _cache: dict[str, pa.Table] = field(default_factory=dict)

    @property
    def session_id(self) -> str:
        return str(self.manifest["session_id"])

    @property
    def video_path(self) -> Path:
        return self.path / self.manifest["video"]["file"]

    def events(self) -> pa.Table:
        return self._table(formats.EVENTS_TABLE, formats.EVENTS_SCHEMA)

    def frames(self) -> pa.Table:
        return self._table(formats.FRAMES_TABLE, formats.FRAMES_SCHEMA)

    def _table(self, name: str, schema_name: str) -> pa.Table:
        if name not in self._cache:
            path = self.path / name
            try:
                table = pq.read_table(path)
            except FileNotFoundError:
                raise BadInputError("table is missing from the session", path) from None
            except (pa.ArrowInvalid, OSError) as exc:
                raise BadInputError(f"not a readable Parquet file ({exc})", path) from None
            schema = formats.arrow_schema(schema_name)
            table = formats.with_optional_columns(table, schema)
            formats.validate_table(table, schema, path)
            self._cache[name] = table.cast(schema)
        return self._cache[name]


def open_session(session_dir: Path | str, *, check_hashes: bool = True) -> Session:
    """Open a finalised session; every file's size and SHA-256 are checked against the manifest."""
    session_dir = Path(session_dir)
    manifest = read_manifest(session_dir)
    if manifest["status"] == "recording":
        hint = ("run `capture sessions recover " + str(session_dir) + "`"
                if needs_recovery(session_dir) else "it is still being recorded")
        raise BadInputError(f"session is not finalised: {hint}", session_dir)
    for name in (formats.VIDEO, formats.EVENTS_TABLE, formats.FRAMES_TABLE):
        if name not in manifest["files"]:
            raise BadInputError(f"manifest lists no {name}", session_dir / formats.MANIFEST)
    if check_hashes:
        for name, entry in manifest["files"].items():
            path = session_dir / name
            if not path.exists():
                raise BadInputError("file listed in the manifest is missing", path)
            if path.stat().st_size != entry["bytes"]:
                raise BadInputError(f"file is {path.stat().st_size} bytes, manifest says "
                                    f"{entry['bytes']} (truncated or changed)", path)
            if sha256_file(path) != entry["sha256"]:
                raise BadInputError("file content does not match its SHA-256 in the manifest "
                                    "(corrupted or changed)", path)
    return Session(path=session_dir, manifest=manifest)
