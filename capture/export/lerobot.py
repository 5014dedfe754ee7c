"""Export consented session bundles as one LeRobot v3.0 dataset (video + per-frame actions)."""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from capture import formats
from capture.align import DEFAULT_MAX_EPISODE_S, Alignment, align_session
from capture.clock import utc_iso
from capture.errors import BadInputError, CaptureError, ConsentError, DiskFullError, is_disk_full
from capture.export import layout
from capture.export.card import SessionSummary, render_card
from capture.export.video import SourceFrames, probe_video, resized
from capture.export.writer import DatasetWriter, refuse_non_finite_events
from capture.session.manifest import Manifest
from capture.session.reader import Session, open_session

PROGRESS_EVERY = 30  # frames between progress callbacks
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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def format_report(report: ExportReport) -> str:
    """A short human summary for the CLI."""
    lines = [
        f"dataset: {report.path}",
        f"  {report.sessions} sessions -> {report.episodes} episodes, {report.frames} frames at "
        f"{report.fps} fps ({report.width}x{report.height}), {report.events} input events "
        f"({report.events_outside_episodes} outside episodes, e.g. while paused)",
        f"  took {report.seconds:.1f} s ({report.frames / max(report.seconds, 1e-9):.0f} frames/s)",
        "  episode  session                                  frames  |capture-grid| ms "
        "p50/p95/max  dropped  repeated",
    ]
    for e in report.episode_reports:
        lines.append(
            f"  {e.episode_index:7d}  {e.session_id[:40]:40s} {e.frames:7d}  "
            f"{e.offset_ms_p50:6.2f} / {e.offset_ms_p95:6.2f} / {e.offset_ms_max:6.2f}      "
            f"{e.source_frames_dropped:7d}  {e.source_frames_repeated:8d}")
    return "\n".join(lines)


@dataclass(slots=True)
class _Source:
    """One session to export, checked and loaded."""

    session: Session
    events: pa.Table
    capture_times_ns: np.ndarray
    dropped_before: np.ndarray
    video_positions: np.ndarray
    width: int
    height: int
    alignment: Alignment | None = None
    time_uncertain: np.ndarray | None = None   # frames whose capture time is not established

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


def _load_source(session_dir: Path) -> _Source:
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
    width, height = probe_video(session.video_path)
    uncertain = frames.column("time_uncertain").fill_null(False).to_numpy(zero_copy_only=False)
    return _Source(session=session, events=events, capture_times_ns=times,
                   video_positions=positions, width=width, height=height,
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


class _Progress:
    def __init__(self, callback: Callable[[int], None] | None) -> None:
        self.callback, self.done, self._reported = callback, 0, 0

    def step(self) -> None:
        self.done += 1
        if self.callback is not None and self.done - self._reported >= PROGRESS_EVERY:
            self.flush()

    def flush(self) -> None:
        if self.callback is not None and self.done != self._reported:
            self.callback(self.done)
            self._reported = self.done


def _write_session(writer: DatasetWriter, source: _Source, *, size: tuple[int, int] | None,
                   pseudonym: str, progress: _Progress, reports: list[EpisodeReport]) -> int:
    """Write one session's episodes and events; returns its first episode index."""
    assert source.alignment is not None
    manifest = source.manifest
    first_episode = writer.total_episodes
    task = manifest.game.name
    with SourceFrames(source.session.video_path) as video:
        for position, episode in enumerate(source.alignment.episodes):
            positions = source.video_positions[episode.source_index].tolist()
            slot = writer.start_episode(len(positions))
            last_position, picture = -1, None
            for video_position in positions:
                if video_position != last_position:
                    picture = resized(video.at(video_position), size)
                    last_position = video_position
                assert picture is not None
                writer.write_frame(picture)
                progress.step()
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
                })
            reports.append(EpisodeReport(
                episode_index=index, session_id=source.session.session_id,
                segment_index=episode.segment_index, segment_part=episode.part_index,
                frames=episode.n_frames, offset_ms_p50=stats.offset_ms_p50,
                offset_ms_p95=stats.offset_ms_p95, offset_ms_max=stats.offset_ms_max,
                source_frames=stats.source_frames, source_frames_dropped=stats.dropped,
                source_frames_repeated=stats.repeated))
    writer.add_events(_events_table(source, first_episode))
    return first_episode


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
                   consent_status: Callable[[str, str], str] | None = None) -> ExportReport:
    """Export finalised, consented sessions as a LeRobot v3.0 dataset at `out`.

    Every session is opened with hash checks and its consent receipt checked before anything
    is written; the dataset is built in a temporary directory next to `out` and renamed into
    place, so a failure leaves no partial dataset. `progress` gets the number of frames written
    so far. `size` is (width, height); None keeps the sessions' own size.
    """
    began = time.monotonic()
    out = Path(out)
    _check_out(out)
    if not session_dirs:
        raise CaptureError("no sessions given to export")
    if not 0 < max_episode_s <= MAX_EPISODE_S:
        raise CaptureError(f"max episode length must be in (0, {MAX_EPISODE_S:g}] s, not "
                           f"{max_episode_s:g}: float32 timestamps lose the 1e-4 s precision "
                           "LeRobot's loader needs in longer episodes")
    sources = [_load_source(Path(d)) for d in session_dirs]
    ids = [s.session.session_id for s in sources]
    if len(set(ids)) != len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise CaptureError(f"sessions listed more than once: {', '.join(twice)}")
    _check_consent(sources, ledger_path, consent_status)
    rate = _choose_fps(sources, fps)
    width, height = _choose_size(sources, size)
    for source in sources:
        try:
            source.alignment = align_session(source.capture_times_ns, source.events,
                                             source_fps=source.fps_target, fps=rate,
                                             max_episode_s=max_episode_s,
                                             dropped_before=source.dropped_before,
                                             uncertain=source.time_uncertain)
        except ValueError as exc:
            raise BadInputError(f"cannot align session: {exc}", source.session.path) from None
    pseudonyms = {s.session.session_id: _pseudonym(s.manifest.player, pseudonym_key)
                  for s in sources}
    tasks = list(dict.fromkeys(s.manifest.game.name for s in sources))
    resize_to = (width, height) if size is not None else None

    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    writer = DatasetWriter(tmp, fps=rate, width=width, height=height, tasks=tasks, limits=limits)
    reports: list[EpisodeReport] = []
    summaries: list[SessionSummary] = []
    counter = _Progress(progress)
    try:
        for source in sources:
            first = _write_session(writer, source, size=resize_to,
                                   pseudonym=pseudonyms[source.session.session_id],
                                   progress=counter, reports=reports)
            assert source.alignment is not None
            summaries.append(SessionSummary(
                session_id=source.session.session_id, game=source.manifest.game.name,
                license=source.manifest.consent.license,
                synthetic_consent=source.manifest.consent.synthetic,
                episodes=writer.total_episodes - first, frames=source.alignment.n_frames))
        card = render_card(name=out.name, fps=rate, width=width, height=height,
                           max_episode_s=max_episode_s, sessions=summaries)
        writer.finish(card)
        _check_out(out)  # nobody created it meanwhile
        os.replace(tmp, out)
    except BaseException as exc:
        writer.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        # PyAV reports a full disk as a broken encoder, not as ENOSPC: look at the disk too.
        if isinstance(exc, Exception) and not isinstance(exc, CaptureError) and (
                is_disk_full(exc) or shutil.disk_usage(out.parent).free < LOW_DISK_BYTES):
            raise DiskFullError(out, "the dataset was not written (nothing of it is left); "
                                "free some space and export again") from None
        raise
    counter.flush()
    outside = sum(int((s.alignment.event_episode < 0).sum()) for s in sources
                  if s.alignment is not None)
    return ExportReport(path=out, sessions=len(sources), episodes=writer.total_episodes,
                        frames=writer.total_frames, events=writer.total_events,
                        events_outside_episodes=outside, fps=rate, width=width, height=height,
                        seconds=time.monotonic() - began, episode_reports=tuple(reports))
