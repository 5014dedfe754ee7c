"""Writing session bundles: create one, finalise it crash-consistently, recover a crashed one."""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import av
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from capture import formats, video
from capture.clock import ClockPair, utc_iso
from capture.errors import BadInputError, CaptureError
from capture.journal import JournalDamage, JournalWriter, TimelineJournal, read_journal
from capture.session.checks import run_checks
from capture.session.manifest import (
    Backends,
    ClockInfo,
    ConsentRef,
    FileEntry,
    GameInfo,
    InputInfo,
    Manifest,
    Recovery,
    RunInfo,
    Status,
    VideoInfo,
    VideoReport,
    read_manifest,
    write_manifest,
)
from capture.session.qa import quality_summary
from capture.session.reader import file_in_session, needs_recovery, read_table, sha256_file

# Journals are the record while a session is recording; tables replace them at finalise.
JOURNALS = (formats.EVENTS_JOURNAL, formats.FRAMES_JOURNAL)
NOT_HASHED = frozenset({formats.MANIFEST, formats.LOCK, *JOURNALS})


def new_session_id(game: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    safe_game = "".join(c if c.isalnum() or c in "-_" else "-" for c in game.lower())[:32]
    return f"{stamp}-{safe_game}-{secrets.token_hex(3)}"


# --- creating -------------------------------------------------------------------------------------
def initial_manifest(*, session_id: str, player: str, consent: ConsentRef, game: GameInfo,
                     video_backend: str, input_info: InputInfo, fps: float, start: ClockPair,
                     run: RunInfo | None = None) -> Manifest:
    """The manifest written when recording starts (status 'recording')."""
    return Manifest(
        session_id=session_id, status="recording", player=player, consent=consent, game=game,
        backend=Backends(video=VideoReport(backend=video_backend), input=input_info),
        video=VideoInfo(file=formats.VIDEO, fps_target=fps),
        clock=ClockInfo(start=start), run=run)


def create_session(session_dir: Path, manifest: Manifest, *, recorder_pid: int | None = None
                   ) -> None:
    """Make the session directory with its lock (the recorder's pid) and first manifest."""
    session_dir.mkdir(parents=True)
    if recorder_pid is not None:
        (session_dir / formats.LOCK).write_text(str(recorder_pid))
    write_manifest(session_dir, manifest)


def video_output(session_dir: Path) -> video.VideoOutput:
    """Where a video backend records this session."""
    return video.VideoOutput(video=session_dir / formats.VIDEO,
                             timeline=TimelineJournal(session_dir / formats.FRAMES_JOURNAL),
                             workdir=session_dir)


def events_journal(session_dir: Path) -> JournalWriter:
    """The journal input events are appended to while recording."""
    return JournalWriter(session_dir / formats.EVENTS_JOURNAL)


# --- finalising -----------------------------------------------------------------------------------
@dataclass(slots=True)
class _Tables:
    events: pa.Table
    frames: pa.Table
    events_damage: JournalDamage
    frames_damage: JournalDamage
    events_source: str
    frames_source: str


def finalise(session_dir: Path, *, video_result: video.VideoResult | None = None,
             input_info: InputInfo | None = None, end: ClockPair | None = None,
             error: str | None = None, frames_before_ns: int | None = None) -> Manifest:
    """Turn the journals into validated tables, hash every file, write the final manifest.

    `frames_before_ns` (a segment hand-over): frames and input from then on belong to the next
    segment (the input was journaled in both until the split; the releases of keys held across
    it, synthetic and at that instant, stay).
    When the video backend reports an error, the timeline keeps only the frames the video file
    really holds, and the session is marked incomplete.
    """
    manifest = read_manifest(session_dir)
    if manifest.is_final:
        raise CaptureError(f"session is already finalised ('{manifest.status}')", session_dir)
    tables = _load_tables(session_dir, salvage=False)
    notes = list(video_result.notes) if video_result else []
    frames, trailing = _cut_at_handover(tables.frames, frames_before_ns)
    tables.events = _events_before_handover(tables.events, frames_before_ns)
    if trailing:
        notes.append(f"{trailing} frame(s) at the end of the video belong to the next segment "
                     "(recorded during the hand-over) and are not in this timeline")
    failed = error or (video_result.error if video_result else None)
    if video_result is not None and video_result.error:
        frames, cut, _ = _keep_decodable(frames,
                                         file_in_session(session_dir, manifest.video.file))
        if cut:
            notes.append(f"{cut} frame(s) logged but not in the video file (the recorder "
                         "failed) were left out of the timeline")
    tables.frames = frames
    status: Status = "incomplete" if failed else "complete"
    final = _final_manifest(session_dir, manifest, tables, status=status, end=end,
                            video_result=video_result, input_info=input_info, notes=notes,
                            error=failed, recovery=None)
    _commit(session_dir, final, tables)
    return final


def recover(session_dir: Path) -> Manifest:
    """Finalise a session whose recorder died, from whatever it left.

    Journals are read with a cut-off last line dropped; a table already written stands in for a
    journal that is gone (a crash during an older finalise); frames the video file does not hold
    are left out. Nothing that exists is deleted before the new manifest is in place, so a crash
    during recovery leaves a session that can be recovered again.
    """
    if not needs_recovery(session_dir):
        manifest = read_manifest(session_dir)
        if manifest.status == "recording":
            raise CaptureError("session is still being recorded (its recorder is running)",
                               session_dir)
        raise CaptureError(f"session is '{manifest.status}', not a crashed recording "
                           "(nothing to recover)", session_dir)
    manifest = read_manifest(session_dir)
    output = video_output(session_dir)
    notes: list[str] = []
    with contextlib.suppress(ValueError, ImportError):
        notes += video.backend(manifest.video_backend).recover(output)
    tables = _load_tables(session_dir, salvage=True)
    logged = tables.frames.num_rows
    video_file = file_in_session(session_dir, manifest.video.file)
    tables.frames, _cut, decodable = _keep_decodable(tables.frames, video_file)
    events, frames = tables.events, tables.frames
    recovery = Recovery(
        recovered_at=utc_iso(), frames_logged=logged, frames_decodable=decodable,
        events_journal_truncated_tail=tables.events_damage.truncated_tail,
        frames_journal_truncated_tail=tables.frames_damage.truncated_tail,
        last_event_ns=events.column("t_ns")[-1].as_py() if events.num_rows else None,
        last_frame_ns=(frames.column("capture_time_ns")[-1].as_py()
                       if frames.num_rows else None),
        events_source=tables.events_source, frames_source=tables.frames_source)
    final = _final_manifest(session_dir, manifest, tables, status="recovered", end=None,
                            video_result=None, input_info=None, notes=notes,
                            error="recorder stopped without finalising; recovered",
                            recovery=recovery)
    _commit(session_dir, final, tables)
    return final


def _load_tables(session_dir: Path, *, salvage: bool) -> _Tables:
    events_damage, frames_damage = JournalDamage(), JournalDamage()
    events, events_source = _load(session_dir, formats.EVENTS_JOURNAL, formats.EVENTS_TABLE,
                                  formats.EVENTS_SCHEMA, salvage, events_damage)
    frames, frames_source = _load(session_dir, formats.FRAMES_JOURNAL, formats.FRAMES_TABLE,
                                  formats.FRAMES_SCHEMA, salvage, frames_damage)
    return _Tables(events=events.sort_by([("t_ns", "ascending")]), frames=frames,
                   events_damage=events_damage, frames_damage=frames_damage,
                   events_source=events_source, frames_source=frames_source)


def _load(session_dir: Path, journal_name: str, table_name: str, schema_name: str,
          salvage: bool, damage: JournalDamage) -> tuple[pa.Table, str]:
    """A table from its journal; else (recovery only) from the table already written; else
    empty. Returns the table and where it came from."""
    schema = formats.arrow_schema(schema_name)
    journal = session_dir / journal_name
    if journal.exists():
        rows = list(read_journal(journal, salvage=salvage, damage=damage))
        try:
            return formats.table_from_rows(rows, schema), "journal"
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
            raise BadInputError(f"journal records do not fit {schema_name}: {exc}",
                                journal) from None
    table = session_dir / table_name
    if salvage and table.exists():
        return read_table(table, schema_name), "table"
    return schema.empty_table(), "none"


def _cut_at_handover(frames: pa.Table, frames_before_ns: int | None) -> tuple[pa.Table, int]:
    if frames_before_ns is None:
        return frames, 0
    kept = sum(1 for t in frames.column("capture_time_ns").to_pylist() if t < frames_before_ns)
    return frames.slice(0, kept), frames.num_rows - kept


def _events_before_handover(events: pa.Table, frames_before_ns: int | None) -> pa.Table:
    if frames_before_ns is None:
        return events
    t_ns, synthetic = events.column("t_ns"), events.column("synthetic")
    kept = pc.or_(pc.less(t_ns, frames_before_ns),
                  pc.and_(pc.equal(t_ns, frames_before_ns), synthetic))
    return events.filter(kept)


def _count_decodable_frames(video_file: Path) -> int:
    """Frames PyAV can decode from the file (a crash may cut the last cluster; an empty or
    missing file holds none)."""
    if not video_file.exists() or video_file.stat().st_size == 0:
        return 0
    frames = 0
    try:
        with av.open(str(video_file)) as container:
            if not container.streams.video:
                return 0
            try:
                for _ in container.decode(container.streams.video[0]):
                    frames += 1
            except av.error.FFmpegError:
                pass  # the cut-off tail of a crashed recording; everything before it counts
    except (av.error.FFmpegError, IndexError):
        return 0  # a file that never got its header (a crash right at the start)
    return frames


def _keep_decodable(frames: pa.Table, video_file: Path) -> tuple[pa.Table, int, int]:
    """The timeline rows whose frame the video file holds, how many were left out, and how
    many frames the file holds."""
    decodable = _count_decodable_frames(video_file)
    positions = frames.column("frame_index").to_pylist()
    kept = sum(1 for p in positions if p < decodable)
    return frames.slice(0, kept), frames.num_rows - kept, decodable


def _final_manifest(session_dir: Path, manifest: Manifest, tables: _Tables, *, status: Status,
                    end: ClockPair | None, video_result: video.VideoResult | None,
                    input_info: InputInfo | None, notes: list[str], error: str | None,
                    recovery: Recovery | None) -> Manifest:
    events, frames = tables.events, tables.frames
    end = end or _end_from_data(manifest.clock.start, events, frames)
    video_info = manifest.video
    backend = manifest.backend
    if video_result is not None:
        backend = Backends(video=VideoReport.from_result(video_result),
                           input=input_info or backend.input)
        video_info = VideoInfo(
            file=video_info.file, fps_target=video_info.fps_target,
            width=video_result.width or video_info.width,
            height=video_result.height or video_info.height,
            codec=video_result.codec or video_info.codec, container=video_info.container)
    elif input_info is not None:
        backend = Backends(video=backend.video, input=input_info)
    video_file = file_in_session(session_dir, video_info.file)
    if frames.num_rows and not video_info.width:
        video_info = _probe_video(video_file, video_info)
    qa = quality_summary(events, frames, video_info.fps_target,
                         manifest.clock.start.monotonic_ns, end.monotonic_ns)
    if video_result is not None:
        qa = replace(qa, recorder_cpu_s=float(video_result.cpu_seconds),
                   dropped_frames=max(qa.dropped_frames, int(video_result.dropped_slots)))
    qa = replace(qa, notes=tuple(notes))
    qa = replace(qa, checks=run_checks(qa, video_info.fps_target, video_file,
                                     frames.column("pts").to_pylist()))
    return manifest.updated(status=status, video=video_info, backend=backend,
                            clock=ClockInfo(name=manifest.clock.name,
                                            start=manifest.clock.start, end=end),
                            qa=qa, recovery=recovery, error=error)


def _end_from_data(start: ClockPair, events: pa.Table, frames: pa.Table) -> ClockPair:
    """The end of a session that never recorded one: its last event or frame."""
    last_times = [t for t in (
        events.column("t_ns")[-1].as_py() if events.num_rows else None,
        frames.column("capture_time_ns")[-1].as_py() if frames.num_rows else None,
    ) if t is not None]
    end_ns = max([start.monotonic_ns, *last_times])
    offset = datetime.fromisoformat(start.utc.replace("Z", "+00:00")).timestamp()
    end_wall = datetime.fromtimestamp(offset + (end_ns - start.monotonic_ns) / 1e9, UTC)
    return ClockPair(monotonic_ns=end_ns, utc=utc_iso(end_wall))


def _probe_video(video_file: Path, info: VideoInfo) -> VideoInfo:
    with contextlib.suppress(av.error.FFmpegError, IndexError), av.open(str(video_file)) as c:
        s = c.streams.video[0]
        return VideoInfo(file=info.file, fps_target=info.fps_target, width=s.width,
                         height=s.height, codec=s.codec_context.name, container=info.container)
    return info


def _commit(session_dir: Path, manifest: Manifest, tables: _Tables) -> None:
    """Make the finalised session durable in an order where every crash point leaves either
    the recording (journals + 'recording' manifest, which recovery finalises again) or the
    finished session:

    1. write the tables (each to a temporary file, fsynced, renamed into place);
    2. hash every file and write the final manifest (atomic rename: the commit point);
    3. only then remove the journals and the lock.
    """
    _write_table(tables.events, session_dir / formats.EVENTS_TABLE, formats.EVENTS_SCHEMA)
    _write_table(tables.frames, session_dir / formats.FRAMES_TABLE, formats.FRAMES_SCHEMA)
    final = manifest.updated(files=hash_files(session_dir))
    write_manifest(session_dir, final)
    for name in (*JOURNALS, formats.LOCK):
        with contextlib.suppress(FileNotFoundError):
            (session_dir / name).unlink()


def _write_table(table: pa.Table, path: Path, schema_name: str) -> None:
    schema = formats.arrow_schema(schema_name)
    formats.validate_table(table, schema, path)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def hash_files(session_dir: Path) -> dict[str, FileEntry]:
    """Size and SHA-256 of every file of the bundle (not the manifest, lock or journals)."""
    out = {}
    for path in sorted(session_dir.iterdir()):
        if path.is_file() and path.name not in NOT_HASHED and not path.name.endswith(".tmp"):
            out[path.name] = FileEntry(sha256=sha256_file(path), bytes=path.stat().st_size)
    return out
