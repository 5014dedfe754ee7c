"""Export consented session bundles as one LeRobot v3.0 dataset (video + per-frame actions)."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from capture import formats
from capture.align import DEFAULT_MAX_EPISODE_S, Alignment, align_session
from capture.clock import utc_iso
from capture.errors import BadInputError, CaptureError, ConsentError, DiskFullError, is_disk_full
from capture.export import layout, storage
from capture.export.card import SessionSummary, render_card
from capture.export.engine import (
    EngineOptions,
    EpisodeJob,
    EpisodeResult,
    SessionJob,
    clear_segments,
    fetch_segment,
    run_jobs,
)
from capture.export.engine_state import (
    STATE_PATH,
    ExportedSession,
    ExportSettings,
    ExportState,
    manifest_sha256,
    read_state,
    write_state,
)
from capture.export.quality import QualityFilters, QualityLog, failed_checks, format_quality
from capture.export.stats import sample_indices
from capture.export.video import SourceInfo, probe_video
from capture.export.writer import DatasetWriter, refuse_non_finite_events
from capture.session.manifest import Manifest
from capture.session.reader import Session, open_session

LOW_DISK_BYTES = 1 << 20  # an export that fails with less free space than this ran out of it
MAX_EPISODE_S = 2000.0  # float32 steps exceed 2 x 1e-4 s beyond 2048 s


@dataclass(frozen=True, slots=True)
class EpisodeReport:
    """One exported episode and how well its frames sit on the grid."""

    episode_index: int
    session_id: str
    segment_index: int
    segment_part: int
    frames: int
    offset_ms_p50: float
    offset_ms_p95: float
    offset_ms_max: float
    source_frames: int
    source_frames_dropped: int
    source_frames_repeated: int
    copied: bool = False  # packets copied from the session video, no re-encode
    worker_cpu_s: float = 0.0  # CPU its worker spent making its video (a measurement)


@dataclass(frozen=True, slots=True)
class ExportReport:
    """What export_dataset wrote."""

    path: Path
    sessions: int
    episodes: int
    frames: int
    events: int
    events_outside_episodes: int
    fps: int
    width: int
    height: int
    seconds: float
    episode_reports: tuple[EpisodeReport, ...]
    codec: str = layout.DEFAULT_CODEC
    engine: str = "local"
    episodes_copied: int = 0
    sessions_unchanged: int = 0  # already in the dataset at `path`: not decoded or encoded again
    worker_cpu_s: float = 0.0    # CPU the workers (processes, Ray tasks) spent making episodes
    quality: dict[str, Any] | None = None  # meta/quality.json, if filters were asked for

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def format_report(report: ExportReport) -> str:
    """A short human summary for the CLI."""
    if report.sessions_unchanged == report.sessions and not report.episode_reports:
        return (f"dataset: {report.path}\n  nothing new: all {report.sessions} sessions are "
                f"already in it, unchanged ({report.episodes} episodes, {report.frames} frames); "
                "nothing was written")
    lines = [
        f"dataset: {report.path}",
        f"  {report.sessions} sessions -> {report.episodes} episodes, {report.frames} frames at "
        f"{report.fps} fps ({report.width}x{report.height}), {report.events} input events "
        f"({report.events_outside_episodes} outside episodes, e.g. while paused)",
        f"  took {report.seconds:.1f} s ({report.frames / max(report.seconds, 1e-9):.0f} frames/s)"
        f" with the {report.engine} engine; {report.codec}, {report.episodes_copied} of "
        f"{report.episodes} episodes copied without re-encoding"
        + (f"; {report.sessions_unchanged} sessions already in the dataset were not re-encoded"
           if report.sessions_unchanged else ""),
        "  episode  session                                  frames  |capture-grid| ms "
        "p50/p95/max  dropped  repeated",
    ]
    for e in report.episode_reports:
        lines.append(
            f"  {e.episode_index:7d}  {e.session_id[:40]:40s} {e.frames:7d}  "
            f"{e.offset_ms_p50:6.2f} / {e.offset_ms_p95:6.2f} / {e.offset_ms_max:6.2f}      "
            f"{e.source_frames_dropped:7d}  {e.source_frames_repeated:8d}")
    lines += format_quality(report.quality) if report.quality else []
    return "\n".join(lines)


@dataclass(slots=True)
class _Source:
    """One session to export, checked and loaded."""

    session: Session
    events: pa.Table
    capture_times_ns: np.ndarray
    dropped_before: np.ndarray
    video_positions: np.ndarray
    video: SourceInfo
    location: str  # where workers read the session: its directory, or the URL it came from
    alignment: Alignment | None = None
    time_uncertain: np.ndarray | None = None   # frames whose capture time is not established

    @property
    def width(self) -> int:
        return self.video.width

    @property
    def height(self) -> int:
        return self.video.height

    @property
    def manifest(self) -> Manifest:
        return self.session.manifest

    @property
    def fps_target(self) -> float:
        return float(self.manifest.video.fps_target)


def _check_out(out: Path) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise CaptureError("output exists and is not a directory", out)
    if out.is_dir() and any(out.iterdir()):
        raise CaptureError("output directory exists and is not empty; choose a new path", out)


def _load_source(session_dir: Path, location: str) -> _Source:
    session = open_session(session_dir)
    frames = session.frames()
    events = session.events()
    frames_path = session.path / formats.FRAMES_TABLE
    refuse_non_finite_events(events, session.path / formats.EVENTS_TABLE)
    times = frames.column("capture_time_ns").to_numpy().astype(np.int64)
    positions = frames.column("frame_index").to_numpy().astype(np.int64)
    if len(times) == 0:
        raise BadInputError("session has no frames to export", frames_path)
    if (np.diff(times) < 0).any():
        raise BadInputError("capture_time_ns goes backwards", frames_path)
    if (np.diff(positions) <= 0).any() or positions[0] < 0:
        raise BadInputError("frame_index is not strictly increasing from >= 0", frames_path)
    uncertain = frames.column("time_uncertain").fill_null(False).to_numpy(zero_copy_only=False)
    return _Source(session=session, events=events, capture_times_ns=times,
                   video_positions=positions, video=probe_video(session.video_path),
                   location=location,
                   dropped_before=frames.column("dropped_before").to_numpy().astype(np.int64),
                   time_uncertain=uncertain.astype(bool))


def _receipt_status(receipt_id: str, game: str, ledger_path: Path | None) -> str:
    try:
        from capture.consent import receipt_status
    except ImportError as exc:
        raise ConsentError(f"cannot check consent receipts ({exc}); refusing to export") from None
    return receipt_status(receipt_id, game=game, ledger_path=ledger_path)


def _check_consent(sources: list[_Source], ledger_path: Path | None,
                   consent_status: Callable[[str, str], str] | None = None) -> None:
    """Refuse unless every session's receipt is active (unknown receipts fail closed).

    `consent_status(receipt_id, game)` replaces the local ledger (e.g. a collector's registry).
    """
    refused = []
    for source in sources:
        receipt = source.manifest.consent.receipt_id
        game = source.manifest.game.name
        status = (consent_status(receipt, game) if consent_status is not None
                  else _receipt_status(receipt, game, ledger_path))
        if status == "active":
            continue
        why = ("was withdrawn" if status == "revoked"
               else "is not in the consent ledger" if status == "unknown"
               else f"has status {status!r}")
        refused.append(f"session {source.session.session_id} ({source.session.path}): "
                       f"consent receipt {receipt} {why}")
    if refused:
        raise ConsentError("refusing to export; nothing was written: " + "; ".join(refused))


def _choose_fps(sources: list[_Source], fps: int | None) -> int:
    if fps is not None:
        if fps <= 0:
            raise CaptureError(f"fps must be positive, not {fps}")
        return int(fps)
    rates = {s.fps_target for s in sources}
    if len(rates) > 1:
        listing = ", ".join(f"{s.session.session_id}: {s.fps_target:g}" for s in sources)
        raise CaptureError(f"sessions were recorded at different rates ({listing}); pass --fps")
    rate = rates.pop()
    if not float(rate).is_integer():
        raise CaptureError(f"sessions were recorded at {rate:g} fps; pass an integer --fps")
    return int(rate)


def _choose_size(sources: list[_Source], size: tuple[int, int] | None) -> tuple[int, int]:
    if size is not None:
        width, height = size
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise CaptureError(f"size {width}x{height}: width and height must be positive "
                               "and even (H.264 yuv420p)")
        return int(width), int(height)
    sizes = {(s.width, s.height) for s in sources}
    if len(sizes) > 1:
        listing = ", ".join(f"{s.session.session_id}: {s.width}x{s.height}" for s in sources)
        raise CaptureError(f"sessions differ in size ({listing}); pass --size WxH")
    width, height = sizes.pop()
    if width % 2 or height % 2:
        raise CaptureError(f"sessions are {width}x{height}; H.264 yuv420p needs even sizes, "
                           "pass --size WxH")
    return width, height


def _pseudonym(player: str, key: bytes | None) -> str:
    from capture.consent.pseudonym import keyed_pseudonym, load_or_create_key

    return keyed_pseudonym(player, key if key is not None else load_or_create_key())


def _utc_at(manifest: Manifest, t_ns: int) -> str:
    start = manifest.clock.start
    wall = datetime.fromisoformat(start.utc.replace("Z", "+00:00"))
    return utc_iso(wall + timedelta(microseconds=(t_ns - start.monotonic_ns) / 1000))


def _events_table(source: _Source, first_episode: int) -> pa.Table:
    assert source.alignment is not None
    episode = source.alignment.event_episode
    frame = source.alignment.event_frame
    inside = episode >= 0
    n = source.events.num_rows
    return (source.events
            .append_column("session_id", pa.array([source.session.session_id] * n, pa.string()))
            .append_column("episode_index", pa.array(episode + first_episode, pa.int64(),
                                                     mask=~inside))
            .append_column("frame_index", pa.array(frame, pa.int64(), mask=~inside)))


def _plan_session(source: _Source, *, first_episode: int, fps: int, width: int, height: int,
                  encoding: layout.VideoEncoding, segments: str,
                  reuse: dict[int, tuple[str, int]] | None) -> SessionJob:
    """The job making this session's episodes: source frames, stats samples, and whether to
    copy packets, encode, or reuse the episode from the dataset's own videos (`reuse`)."""
    assert source.alignment is not None
    native = (width, height) == (source.width, source.height)
    copyable_source = (native and encoding.codec == "h264" and source.video.codec == "h264"
                       and source.video.pix_fmt == layout.VIDEO_PIX_FMT
                       and float(fps) == source.fps_target)
    episodes = []
    for offset, episode in enumerate(source.alignment.episodes):
        positions = source.video_positions[episode.source_index]
        one_to_one = bool(len(positions) and (np.diff(positions) == 1).all())
        index = first_episode + offset
        video, video_from = reuse[index] if reuse is not None else (None, 0)
        episodes.append(EpisodeJob(
            index=index, positions=tuple(positions.tolist()),
            samples=tuple(sample_indices(episode.n_frames)),
            copy=copyable_source and one_to_one, reuse=video, reuse_from=video_from))
    return SessionJob(source=source.location, video=source.manifest.video.file,
                      episodes=tuple(episodes), fps=fps, width=width, height=height,
                      encoding=encoding, segments=segments)


def _join_session(writer: DatasetWriter, source: _Source, results: list[EpisodeResult], *,
                  work: Path, pseudonym: str, reports: list[EpisodeReport]) -> int:
    """Append one session's made episodes and its events; returns its first episode index."""
    assert source.alignment is not None
    manifest = source.manifest
    first_episode = writer.total_episodes
    task = manifest.game.name
    for position, (episode, result) in enumerate(zip(source.alignment.episodes, results,
                                                     strict=True)):
        if result.index != writer.total_episodes:
            raise RuntimeError(f"episode {result.index} came back where "
                               f"{writer.total_episodes} was due")
        segment = fetch_segment(result, work)
        slot = writer.start_episode(segment)
        writer.video.append()
        segment.path.unlink(missing_ok=True)
        rows = source.alignment.episode_rows(position)
        stats = episode.stats
        index = writer.add_episode(
            slot, task=task, capture_time_ns=episode.capture_time_ns,
            actions={name: values[rows] for name, values in source.alignment.actions.items()},
            extra={
                "session_id": source.session.session_id,
                "segment_index": episode.segment_index,
                "segment_part": episode.part_index,
                "consent_receipt_id": manifest.consent.receipt_id,
                "license": manifest.consent.license,
                "player": pseudonym,
                "synthetic_consent": manifest.consent.synthetic,
                "source_start_utc": _utc_at(manifest, episode.start_ns),
                "grid_start_ns": episode.start_ns,
                "alignment/offset_ms_p50": stats.offset_ms_p50,
                "alignment/offset_ms_p95": stats.offset_ms_p95,
                "alignment/offset_ms_max": stats.offset_ms_max,
                "alignment/source_frames_dropped": stats.dropped,
                "alignment/source_frames_repeated": stats.repeated,
            },
            image_stats=result.image_stats.stats())
        reports.append(EpisodeReport(
            episode_index=index, session_id=source.session.session_id,
            segment_index=episode.segment_index, segment_part=episode.part_index,
            frames=episode.n_frames, offset_ms_p50=stats.offset_ms_p50,
            offset_ms_p95=stats.offset_ms_p95, offset_ms_max=stats.offset_ms_max,
            source_frames=stats.source_frames, source_frames_dropped=stats.dropped,
            source_frames_repeated=stats.repeated, copied=result.copied,
            worker_cpu_s=result.cpu_s))
    writer.add_events(_events_table(source, first_episode))
    return first_episode


def _stage_inputs(session_dirs: Sequence[Path | str], work: Path) -> list[tuple[Path, str]]:
    """(local directory, location for workers) of each session; URLs are copied down."""
    staged = []
    for number, item in enumerate(session_dirs):
        location = str(item)
        if storage.is_url(location):
            local = storage.local_dir(location, work / "inputs" / f"{number:06d}")
        else:
            local = Path(location)
        staged.append((local, location))
    return staged


def remove_stale_partials(out: Path) -> list[Path]:
    """Delete what killed exports to `out` left (their process is gone); returns them."""
    removed = []
    for partial in out.parent.glob(f".{out.name}.partial-*"):
        pid = partial.name.rsplit(".partial-", 1)[1].split("-", 1)[0]
        if pid.isdigit() and _process_alive(int(pid)):
            continue
        shutil.rmtree(partial, ignore_errors=True)
        removed.append(partial)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def export_dataset(session_dirs: Sequence[Path | str], out: Path | str, *,
                   fps: int | None = None, size: tuple[int, int] | None = None,
                   max_episode_s: float = DEFAULT_MAX_EPISODE_S,
                   pseudonym_key: bytes | None = None, ledger_path: Path | None = None,
                   progress: Callable[[int], None] | None = None,
                   limits: layout.FileLimits = layout.DEFAULT_LIMITS,
                   codec: str | None = None, gop_seconds: float | None = None,
                   engine: EngineOptions | None = None,
                   consent_status: Callable[[str, str], str] | None = None,
                   quality: QualityFilters | None = None) -> ExportReport:
    """Export finalised, consented sessions as a LeRobot v3.0 dataset at `out`.

    Sessions and `out` are local paths or object-store URLs (see capture.export.storage).
    Every session is opened with hash checks and its consent receipt checked before anything
    is written; the dataset is built in a temporary directory next to `out` (or, for a URL,
    locally) and renamed (uploaded, info.json last) into place, so a failure leaves no partial
    dataset. `progress` gets the number of frames written so far. `size` is (width, height);
    None keeps the sessions' own size. `engine` says where episodes are encoded (worker
    processes by default); the result is the same whichever engine makes it.

    If `out` is a dataset this function made, the export is incremental (engine_state): every
    session it holds must be given again; unchanged ones are not re-encoded, new ones are
    appended, and the result equals a from-scratch export of all of them. Settings left None
    (fps, size, codec, keyframe interval) then default to the dataset's.
    `consent_status(receipt_id, game)` replaces the local ledger (e.g. a collector's registry).
    `quality` filters episodes (capture.export.quality); what they removed goes to
    meta/quality.json.
    """
    began = time.monotonic()
    engine = engine or EngineOptions()
    if not session_dirs:
        raise CaptureError("no sessions given to export")
    if codec is not None and codec not in layout.CODECS:
        raise CaptureError(f"unknown codec {codec!r}; use one of {', '.join(layout.CODECS)}")
    if not 0 < max_episode_s <= MAX_EPISODE_S:
        raise CaptureError(f"max episode length must be in (0, {MAX_EPISODE_S:g}] s, not "
                           f"{max_episode_s:g}: float32 timestamps lose the 1e-4 s precision "
                           "LeRobot's loader needs in longer episodes")
    if gop_seconds is not None and gop_seconds <= 0:
        raise CaptureError(f"the keyframe interval must be positive, not {gop_seconds:g} s")
    remote_out = storage.is_url(str(out))
    if remote_out:
        scratch = Path(tempfile.mkdtemp(prefix="capture-export-"))
        local_out = scratch / "dataset"
    else:
        local_out = Path(out)
        local_out.parent.mkdir(parents=True, exist_ok=True)
        _restore_previous(local_out)
        # next to the dataset, named so that remove_stale_partials clears it after a kill
        scratch = local_out.parent / \
            f".{local_out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
        scratch.mkdir()
    try:
        previous = _previous_export(str(out), local_out, scratch)
        return _export(session_dirs, out, local_out, scratch, previous, fps=fps, size=size,
                       max_episode_s=max_episode_s, pseudonym_key=pseudonym_key,
                       ledger_path=ledger_path, progress=progress, limits=limits, codec=codec,
                       gop_seconds=gop_seconds, engine=engine, began=began,
                       consent_status=consent_status, quality=quality)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class _Previous:
    """A dataset this exporter made earlier at the same place."""

    state: ExportState
    episodes: pa.Table   # its meta/episodes rows
    location: str        # the dataset (directory or URL)


def _previous_export(out: str, local_out: Path, scratch: Path) -> _Previous | None:
    """The earlier export at `out`, or None if there is none; refuses anything else there."""
    if storage.is_url(out):
        info_url = storage.join(out, *layout.INFO_PATH.split("/"))
        state_url = storage.join(out, *STATE_PATH.split("/"))
        if not storage.exists(info_url):
            return None
        if not storage.exists(state_url):
            raise CaptureError(f"{out.split('?')[0]} holds a dataset that capture export did "
                               "not make (no meta/capture_export.json); choose a new location")
        state_file = storage.local_file(state_url, scratch / "previous" / STATE_PATH)
        episodes_file = storage.local_file(
            storage.join(out, *layout.EPISODES_PATH.format(chunk_index=0, file_index=0)
                         .split("/")), scratch / "previous" / "episodes.parquet")
    else:
        if local_out.is_symlink() or (local_out.exists() and not local_out.is_dir()):
            raise CaptureError("output exists and is not a directory", local_out)
        if not local_out.is_dir() or not any(local_out.iterdir()):
            return None
        state_file = local_out / STATE_PATH
        if not state_file.is_file():
            raise CaptureError("output directory exists, is not empty and is not a dataset "
                               "capture export made; choose a new path", local_out)
        episodes_file = local_out / layout.EPISODES_PATH.format(chunk_index=0, file_index=0)
    try:
        episodes = pq.read_table(episodes_file)
    except (OSError, pa.ArrowInvalid) as exc:
        raise BadInputError(f"the dataset's episodes table cannot be read ({exc})",
                            episodes_file) from None
    return _Previous(state=read_state(state_file), episodes=episodes, location=out)


def _order_sources(sources: list[_Source], previous: _Previous | None) -> tuple[
        list[_Source], set[str]]:
    """Sources in dataset order (the earlier export's first) and the ids of unchanged ones."""
    if previous is None:
        return sources, set()
    by_id = {s.session.session_id: s for s in sources}
    missing = [e.session_id for e in previous.state.sessions if e.session_id not in by_id]
    if missing:
        raise CaptureError(
            f"the dataset holds {len(missing)} sessions that were not given "
            f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); give every "
            "session again (unchanged ones are not re-encoded), or export to a new location")
    changed = [e.session_id for e in previous.state.sessions
               if manifest_sha256(by_id[e.session_id].session.path) != e.manifest_sha256]
    if changed:
        raise CaptureError(f"sessions changed since they were exported: {', '.join(changed)}; "
                           "export to a new location")
    old = [by_id[e.session_id] for e in previous.state.sessions]
    known = {e.session_id for e in previous.state.sessions}
    return old + [s for s in sources if s.session.session_id not in known], known


def _reuse_plan(previous: _Previous, fps: int) -> dict[int, tuple[str, int]]:
    """Episode index -> (dataset video location, its first frame in that file)."""
    key = layout.VIDEO_KEY
    rows = previous.episodes.select([
        "episode_index", f"videos/{key}/chunk_index", f"videos/{key}/file_index",
        f"videos/{key}/from_timestamp"]).to_pylist()
    plan = {}
    for row in rows:
        rel = layout.VIDEO_PATH.format(video_key=key, chunk_index=row[f"videos/{key}/chunk_index"],
                                       file_index=row[f"videos/{key}/file_index"])
        plan[int(row["episode_index"])] = (storage.join(previous.location, *rel.split("/")),
                                           round(row[f"videos/{key}/from_timestamp"] * fps))
    return plan


def _export(session_dirs: Sequence[Path | str], out: Path | str, local_out: Path,
            scratch: Path, previous: _Previous | None, *, fps: int | None,
            size: tuple[int, int] | None, max_episode_s: float, pseudonym_key: bytes | None,
            ledger_path: Path | None, progress: Callable[[int], None] | None,
            limits: layout.FileLimits, codec: str | None, gop_seconds: float | None,
            engine: EngineOptions, began: float,
            consent_status: Callable[[str, str], str] | None = None,
            quality: QualityFilters | None = None) -> ExportReport:
    work = scratch / "work"
    staged = _stage_inputs(session_dirs, work)
    sources = [_load_source(local, location) for local, location in staged]
    ids = [s.session.session_id for s in sources]
    if len(set(ids)) != len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise CaptureError(f"sessions listed more than once: {', '.join(twice)}")
    sources, unchanged = _order_sources(sources, previous)
    _check_consent(sources, ledger_path, consent_status)
    if previous is not None:
        old = previous.state.settings
        fps = fps if fps is not None else old.fps
        size = size if size is not None else (old.width, old.height)
        codec = codec or old.codec
        gop_seconds = gop_seconds if gop_seconds is not None else old.gop / old.fps
    rate = _choose_fps(sources, fps)
    width, height = _choose_size(sources, size)
    encoding = layout.default_encoding(rate, codec or layout.DEFAULT_CODEC,
                                       layout.GOP_SECONDS if gop_seconds is None
                                       else gop_seconds)
    settings = ExportSettings.of(fps=rate, width=width, height=height, encoding=encoding,
                                 max_episode_s=max_episode_s, limits=limits)
    if previous is not None:
        differences = settings.differences(previous.state.settings)
        if differences:
            raise CaptureError("the dataset was exported with other settings: "
                               + "; ".join(differences) + "; export to a new location")
    for source in sources:
        try:
            source.alignment = align_session(source.capture_times_ns, source.events,
                                             source_fps=source.fps_target, fps=rate,
                                             max_episode_s=max_episode_s,
                                             dropped_before=source.dropped_before,
                                             uncertain=source.time_uncertain)
        except ValueError as exc:
            raise BadInputError(f"cannot align session: {exc}", source.session.path) from None
    qlog = QualityLog(quality, rate) if quality is not None and quality.active else None
    if qlog is not None:
        if previous is not None:
            raise CaptureError("quality filters apply to a new export; export to a new location")
        for source in sources:
            assert source.alignment is not None
            source.alignment = qlog.filter(
                source.alignment, session_id=source.session.session_id,
                video_path=source.session.video_path, source_fps=source.fps_target,
                frame_pts=source.session.frames().column("pts").to_numpy(),
                events=source.events, dropped_before=source.dropped_before,
                failed_checks=failed_checks(source.manifest),
                time_uncertain=source.time_uncertain)
        qlog.refuse_if_nothing_left()
        sources = [s for s in sources if s.alignment is not None and s.alignment.episodes]
    if previous is not None and len(unchanged) == len(sources):
        return _nothing_new(previous, out, sources, began, engine)
    pseudonyms = {s.session.session_id: _pseudonym(s.manifest.player, pseudonym_key)
                  for s in sources}
    tasks = list(dict.fromkeys(s.manifest.game.name for s in sources))
    reuse = _reuse_plan(previous, rate) if previous is not None else {}

    remote_out = storage.is_url(str(out))
    segments = (storage.join(str(out), f".capture-segments-{secrets.token_hex(6)}")
                if remote_out and engine.engine == "ray" else str(work / "segments"))
    if not remote_out:
        remove_stale_partials(local_out)
    tmp = (scratch / "build") if remote_out else \
        local_out.parent / f".{local_out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    writer = DatasetWriter(tmp, fps=rate, width=width, height=height, tasks=tasks, limits=limits,
                           encoding=encoding)
    reports: list[EpisodeReport] = []
    summaries: list[SessionSummary] = []
    exported: list[ExportedSession] = []
    jobs: list[SessionJob] = []
    first_episode = 0
    for source in sources:
        assert source.alignment is not None
        jobs.append(_plan_session(source, first_episode=first_episode, fps=rate, width=width,
                                  height=height, encoding=encoding,
                                  segments=storage.join(segments, f"{len(jobs):06d}"),
                                  reuse=reuse if source.session.session_id in unchanged
                                  else None))
        first_episode += len(source.alignment.episodes)
    done: dict[int, list[EpisodeResult]] = {}
    joined = 0

    def on_result(position: int, results: list[EpisodeResult]) -> None:
        nonlocal joined
        done[position] = results
        while joined in done:  # join in session order, as soon as the next one is there
            source = sources[joined]
            assert source.alignment is not None
            first = _join_session(writer, source, done.pop(joined), work=work,
                                  pseudonym=pseudonyms[source.session.session_id],
                                  reports=reports)
            if qlog is not None:
                qlog.placed(source.session.session_id, first)
            summaries.append(SessionSummary(
                session_id=source.session.session_id, game=source.manifest.game.name,
                license=source.manifest.consent.license,
                synthetic_consent=source.manifest.consent.synthetic,
                episodes=writer.total_episodes - first, frames=source.alignment.n_frames))
            exported.append(ExportedSession(
                session_id=source.session.session_id,
                manifest_sha256=manifest_sha256(source.session.path), first_episode=first,
                episodes=writer.total_episodes - first, frames=source.alignment.n_frames))
            joined += 1
            if progress is not None:
                progress(writer.total_frames)

    try:
        run_jobs(jobs, engine, on_result)
        if joined != len(sources):
            raise RuntimeError(f"{len(sources) - joined} sessions were not made")
        write_state(tmp / STATE_PATH, ExportState(settings=settings, sessions=tuple(exported)))
        quality_record = qlog.write(tmp) if qlog is not None else None  # before the checksums
        card = render_card(name=Path(str(out).split("?")[0]).name, fps=rate, width=width,
                           height=height, max_episode_s=max_episode_s, sessions=summaries,
                           quality=quality_record,
                           location=None if remote_out else str(Path(out).resolve()))
        writer.finish(card)
        if remote_out:
            storage.upload_dir(tmp, str(out), last=(STATE_PATH, layout.INFO_PATH))
        else:
            shutil.rmtree(scratch)  # before the rename: the rename is the export's last step
            _replace_dataset(tmp, local_out, replacing=previous is not None)
    except BaseException as exc:
        writer.abort()
        # PyAV reports a full disk as a broken encoder, not as ENOSPC: look at the disk too.
        if isinstance(exc, Exception) and not isinstance(exc, CaptureError) and (
                is_disk_full(exc) or (not remote_out and shutil.disk_usage(
                    local_out.parent).free < LOW_DISK_BYTES)):
            raise DiskFullError(local_out, "the dataset was not written (nothing of it is "
                                "left); free some space and export again") from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if storage.is_url(segments):
            clear_segments(segments)
    outside = sum(int((s.alignment.event_episode < 0).sum()) for s in sources
                  if s.alignment is not None)
    return ExportReport(path=local_out if not remote_out else Path(str(out).split("?")[0]),
                        sessions=len(sources), episodes=writer.total_episodes,
                        frames=writer.total_frames, events=writer.total_events,
                        events_outside_episodes=outside, fps=rate, width=width, height=height,
                        seconds=time.monotonic() - began, episode_reports=tuple(reports),
                        codec=encoding.codec, engine=engine.engine,
                        episodes_copied=sum(r.copied for r in reports),
                        sessions_unchanged=len(unchanged),
                        worker_cpu_s=sum(r.worker_cpu_s for r in reports),
                        quality=quality_record)


def _replace_dataset(built: Path, out: Path, *, replacing: bool) -> None:
    """Put the built dataset at `out`: a rename, or for a re-run, the old one renamed aside
    first. A kill between the two renames leaves it as `.<name>.previous-*`, which the next
    export puts back (_restore_previous); after the second, it is stale and removed."""
    if not replacing:
        _check_out(out)  # nobody created it meanwhile
        os.replace(built, out)
        return
    aside = out.parent / f".{out.name}.previous-{secrets.token_hex(4)}"
    os.replace(out, aside)
    os.replace(built, out)
    shutil.rmtree(aside, ignore_errors=True)


def _restore_previous(out: Path) -> None:
    """Finish what a killed re-run left: its old dataset back at `out` if nothing is there,
    else the old copy removed (the new one made it into place)."""
    for aside in sorted(out.parent.glob(f".{out.name}.previous-*")):
        if not out.exists():
            os.replace(aside, out)
        else:
            shutil.rmtree(aside, ignore_errors=True)


def _nothing_new(previous: _Previous, out: Path | str, sources: list[_Source], began: float,
                 engine: EngineOptions) -> ExportReport:
    settings = previous.state.settings
    return ExportReport(
        path=Path(str(out).split("?")[0]), sessions=len(sources),
        episodes=sum(e.episodes for e in previous.state.sessions),
        frames=sum(e.frames for e in previous.state.sessions), events=0,
        events_outside_episodes=0, fps=settings.fps, width=settings.width,
        height=settings.height, seconds=time.monotonic() - began, episode_reports=(),
        codec=settings.codec, engine=engine.engine, sessions_unchanged=len(sources))
