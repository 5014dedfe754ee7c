"""Export-time quality filters: which episodes or idle spans to leave out, and what that removed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from capture import formats
from capture.align import Alignment, AlignmentStats, EpisodeGrid
from capture.errors import BadInputError, CaptureError
from capture.session.checks import ACTIVE_KINDS, BLACK_MEAN_LUMA
from capture.session.manifest import Manifest

QUALITY_PATH = "meta/quality.json"
QUALITY_SCHEMA = "dataset-quality.v1.schema.json"
FILTERS = ("require_checks", "segment_length", "black_frozen", "low_fps", "drops", "idle")
SAMPLES_PER_EPISODE = 8
FROZEN_PIXEL_DELTA = 8        # a pixel whose luma (0-255) moves more than this has changed
FROZEN_CHANGED_FRACTION = 1e-5  # pictures with fewer changed pixels than this are the same
IdleMode = Literal["trim", "flag"]


@dataclass(frozen=True, slots=True)
class QualityFilters:
    """Which filters the export applies (None / False: that filter is off)."""

    min_segment_s: float | None = None
    max_segment_s: float | None = None
    idle_s: float | None = None
    idle_mode: IdleMode = "flag"
    drop_black_frozen: bool = False
    min_fps_ratio: float | None = None
    max_drop_ratio: float | None = None
    require_checks: bool = False

    def __post_init__(self) -> None:
        if (self.min_segment_s is not None and self.max_segment_s is not None
                and self.min_segment_s > self.max_segment_s):
            raise ValueError(f"minimum segment length {self.min_segment_s:g} s is above the "
                             f"maximum {self.max_segment_s:g} s")
        if self.idle_s is not None and self.idle_s <= 0:
            raise ValueError("idle span length must be positive")
        if self.idle_mode not in ("trim", "flag"):
            raise ValueError(f"idle mode must be trim or flag, not {self.idle_mode!r}")

    @property
    def active(self) -> bool:
        return any(v not in (None, False) for k, v in asdict(self).items() if k != "idle_mode")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class PictureSample:
    """Luma of one sampled output frame, and how much of it the next source frame changed."""

    mean_luma: float
    changed: float | None  # fraction of pixels whose luma moved > FROZEN_PIXEL_DELTA in the
    #                        next source frame; None: there is no next frame


@dataclass(slots=True)
class Removed:
    """How much one filter removed."""

    episodes: int = 0
    frames: int = 0
    seconds: float = 0.0
    sessions: int = 0

    def add(self, frames: int, fps: int, episodes: int = 1) -> None:
        self.episodes += episodes
        self.frames += frames
        self.seconds = round(self.seconds + frames / fps, 6)


@dataclass(frozen=True, slots=True)
class IdleSpan:
    """A span of at least idle_s without input, flagged (kept) or trimmed (cut out)."""

    session_id: str
    position: int        # episode position within its session, before filtering
    from_frame: int      # frames [from_frame, to_frame) of that episode
    to_frame: int
    seconds: float


@dataclass
class SessionOutcome:
    """One session after filtering: its new alignment and what each filter took out."""

    session_id: str
    alignment: Alignment
    removed: dict[str, Removed]
    idle_spans: list[IdleSpan] = field(default_factory=list)
    kept_from: list[int] = field(default_factory=list)  # per new episode: position it came from
    failed_checks: tuple[str, ...] = ()


def failed_checks(manifest: Manifest) -> list[str]:
    """Names of the session's failed record-time checks; a session without checks fails
    closed ("no_checks")."""
    if manifest.qa is None or not manifest.qa.checks:
        return ["no_checks"]
    return [c.name for c in manifest.qa.failed_checks]


# --- measurements ------------------------------------------------------------------------------
def sample_positions(n_frames: int, count: int = SAMPLES_PER_EPISODE) -> list[int]:
    """Frames of an episode to sample for black/frozen: spread evenly, first to last."""
    if n_frames <= 0:
        return []
    return sorted(set(np.linspace(0, n_frames - 1, min(count, n_frames)).round().astype(int)
                      .tolist()))


def sample_pictures(video_path: Path, alignment: Alignment, frame_pts: np.ndarray,
                    count: int = SAMPLES_PER_EPISODE) -> dict[tuple[int, int], PictureSample]:
    """(episode position, frame) -> luma figures of a few frames per episode, each reached by
    seeking to its pts (`frame_pts`: per frame-timeline row) with the frame after it; a long
    session is not decoded from its start. Frames that cannot be reached are left out."""
    import av

    wanted: dict[int, list[tuple[int, int]]] = {}
    for position, episode in enumerate(alignment.episodes):
        for frame in sample_positions(episode.n_frames, count):
            wanted.setdefault(int(episode.source_index[frame]), []).append((position, frame))
    out: dict[tuple[int, int], PictureSample] = {}
    try:
        with av.open(str(video_path)) as container:
            stream = container.streams.video[0]
            for row in sorted(wanted):
                target = int(frame_pts[row])
                container.seek(target, stream=stream, backward=True)
                got: list[np.ndarray] = []
                for picture in container.decode(stream):
                    if picture.pts is None or picture.pts < target:
                        continue
                    if not got and picture.pts != target:
                        break  # the timeline's frame is not in the file where it says
                    got.append(picture.to_ndarray(format="gray").astype(np.float32))
                    if len(got) == 2:
                        break
                if not got:
                    continue
                changed = (float((np.abs(got[0] - got[1]) > FROZEN_PIXEL_DELTA).mean())
                           if len(got) == 2 else None)
                for place in wanted[row]:
                    out[place] = PictureSample(mean_luma=float(got[0].mean()), changed=changed)
    except (av.error.FFmpegError, IndexError) as exc:
        raise BadInputError(f"video cannot be sampled ({exc})", video_path) from None
    return out


HELD_ACTIONS = ("action.keys_held", "action.mouse_buttons", "action.gamepad_buttons")
STICK_DEADZONE = 0.1  # gamepad axis values within this of 0 are a stick at rest


def active_frames(alignment: Alignment, kinds: Sequence[str]) -> list[np.ndarray]:
    """Per episode: a bool per frame, True where the player gives input: an input event
    (press, motion, wheel, stick move) falls in it, or a key, button or stick is held."""
    n = alignment.n_frames
    held = np.zeros(n, dtype=bool)
    for name in HELD_ACTIONS:
        if name in alignment.actions:
            held |= np.asarray(alignment.actions[name]).reshape(n, -1).any(axis=1)
    if "action.gamepad_axes" in alignment.actions:
        axes = np.abs(np.asarray(alignment.actions["action.gamepad_axes"]).reshape(n, -1))
        held |= (axes > STICK_DEADZONE).any(axis=1)
    starts = np.cumsum([0] + [e.n_frames for e in alignment.episodes])
    out = [held[starts[i]:starts[i + 1]].copy() for i in range(len(alignment.episodes))]
    active = np.isin(np.asarray(kinds, dtype=object), list(ACTIVE_KINDS))
    for ep, fr in zip(alignment.event_episode[active], alignment.event_frame[active],
                      strict=True):
        if ep >= 0:
            out[int(ep)][int(fr)] = True
    return out


def idle_runs(active: np.ndarray, min_frames: int) -> list[tuple[int, int]]:
    """[lo, hi) runs of at least min_frames frames without input."""
    runs, lo = [], None
    for i, a in enumerate([*active.tolist(), True]):
        if not a and lo is None:
            lo = i
        elif a and lo is not None:
            if i - lo >= min_frames:
                runs.append((lo, i))
            lo = None
    return runs


# --- the pure filter ---------------------------------------------------------------------------
def _sub_episode(e: EpisodeGrid, lo: int, hi: int, part: int,
                 time_uncertain: np.ndarray | None) -> EpisodeGrid:
    """Frames [lo, hi) of an episode as an episode of their own. Its alignment figures are
    recomputed from the frames it shows (source frames spanned, unshown among them,
    repeats, offsets, frames whose time is uncertain)."""
    bounds = e.bounds_ns
    source = e.source_index[lo:hi]
    capture = e.capture_time_ns[lo:hi]
    offsets = np.abs(capture - bounds[lo:hi]) / 1e6
    spanned = int(source[-1] - source[0] + 1)
    stats = AlignmentStats(
        offset_ms_p50=float(np.percentile(offsets, 50)),
        offset_ms_p95=float(np.percentile(offsets, 95)),
        offset_ms_max=float(offsets.max()), source_frames=spanned,
        dropped=spanned - len(np.unique(source)),
        repeated=int(np.count_nonzero(np.diff(source) == 0)),
        uncertain_sources=(int(np.count_nonzero(np.asarray(time_uncertain)[source]))
                           if time_uncertain is not None else 0))
    return EpisodeGrid(segment_index=e.segment_index, part_index=part, start_ns=int(bounds[lo]),
                       end_ns=int(bounds[hi]), fps=e.fps, source_index=source,
                       capture_time_ns=capture, stats=stats)


def filter_session(alignment: Alignment, *, session_id: str, filters: QualityFilters,
                   fps: int, source_fps: float, kinds: Sequence[str],
                   dropped_before: np.ndarray, failed_checks: Sequence[str] = (),
                   pictures: dict[tuple[int, int], PictureSample] | None = None,
                   time_uncertain: np.ndarray | None = None) -> SessionOutcome:
    """Apply `filters` to one aligned session (pure: every input is given).

    Filters run in FILTERS order and each counts only what it removed itself: a session
    failing its record-time checks goes whole; then segments (continuous runs) outside the
    length bounds; then episodes that are mostly black or frozen, whose source frames came at
    too low a rate, or with too many dropped or repeated frames; last, idle spans are cut out
    (an episode splits around them) or listed.
    """
    removed = {name: Removed() for name in FILTERS}
    episodes = alignment.episodes
    keep = [True] * len(episodes)

    def drop(position: int, why: str) -> None:
        keep[position] = False
        removed[why].add(episodes[position].n_frames, fps)

    if filters.require_checks and failed_checks:
        for p in range(len(episodes)):
            drop(p, "require_checks")
        removed["require_checks"].sessions = 1
    segment_frames: dict[int, int] = {}
    for e in episodes:
        segment_frames[e.segment_index] = segment_frames.get(e.segment_index, 0) + e.n_frames
    for p, e in enumerate(episodes):
        if not keep[p]:
            continue
        seconds = segment_frames[e.segment_index] / fps
        if ((filters.min_segment_s is not None and seconds < filters.min_segment_s)
                or (filters.max_segment_s is not None and seconds > filters.max_segment_s)):
            drop(p, "segment_length")
    if filters.drop_black_frozen:
        for p, e in enumerate(episodes):
            if not keep[p]:
                continue
            samples = [pictures[(p, f)] for f in sample_positions(e.n_frames)
                       if pictures is not None and (p, f) in pictures]
            bad = [s.mean_luma < BLACK_MEAN_LUMA
                   or (s.changed is not None and s.changed < FROZEN_CHANGED_FRACTION)
                   for s in samples]
            if samples and sum(bad) > len(bad) / 2:
                drop(p, "black_frozen")
    for p, e in enumerate(episodes):
        if not keep[p]:
            continue
        expected = e.n_frames * source_fps / fps
        if filters.min_fps_ratio is not None and (
                e.stats.source_frames / max(expected, 1e-9) < filters.min_fps_ratio):
            drop(p, "low_fps")
            continue
        if filters.max_drop_ratio is not None:
            lo, hi = int(e.source_index.min()), int(e.source_index.max()) + 1
            slots = int(np.asarray(dropped_before[lo + 1:hi]).sum())
            drop_ratio = slots / max(1, hi - lo + slots)
            repeat_ratio = e.stats.repeated / max(1, e.n_frames)
            if max(drop_ratio, repeat_ratio) > filters.max_drop_ratio:
                drop(p, "drops")

    idle: list[IdleSpan] = []
    pieces: list[tuple[int, int, int]] = []  # (position, lo, hi) of what is written
    activity = active_frames(alignment, kinds) if filters.idle_s is not None else []
    for p, e in enumerate(episodes):
        if not keep[p]:
            continue
        runs = (idle_runs(activity[p], max(1, round(filters.idle_s * fps)))
                if filters.idle_s is not None else [])
        idle += [IdleSpan(session_id, p, lo, hi, round((hi - lo) / fps, 6)) for lo, hi in runs]
        if filters.idle_mode == "trim" and runs:
            start = 0
            for lo, hi in runs:
                if lo > start:
                    pieces.append((p, start, lo))
                start = hi
                removed["idle"].add(hi - lo, fps, episodes=0)
            if start < e.n_frames:
                pieces.append((p, start, e.n_frames))
            if not any(q == p for q, _, _ in pieces):
                removed["idle"].episodes += 1
        else:
            pieces.append((p, 0, e.n_frames))
    new = _rebuild(alignment, pieces, time_uncertain)
    return SessionOutcome(session_id=session_id, alignment=new, removed=removed,
                          idle_spans=idle, kept_from=[p for p, _, _ in pieces],
                          failed_checks=tuple(failed_checks))


def _rebuild(alignment: Alignment, pieces: list[tuple[int, int, int]],
             time_uncertain: np.ndarray | None = None) -> Alignment:
    """The alignment holding only `pieces`; events elsewhere are placed in no episode."""
    episodes = alignment.episodes
    whole = [(p, lo, hi) == (p, 0, episodes[p].n_frames) for p, lo, hi in pieces]
    if len(pieces) == len(episodes) and all(whole):
        return alignment
    starts = np.cumsum([0] + [e.n_frames for e in episodes])
    rows, new_eps = [], []
    part_of: dict[int, int] = {}
    new_index = {}  # (old position, old frame) -> (new position, new frame), by ranges
    for n, (p, lo, hi) in enumerate(pieces):
        e = episodes[p]
        part = part_of.get(e.segment_index, 0)
        part_of[e.segment_index] = part + 1
        new_eps.append(e if (lo, hi) == (0, e.n_frames) and e.part_index == part
                       else _sub_episode(e, lo, hi, part, time_uncertain))
        rows.append(np.arange(starts[p] + lo, starts[p] + hi))
        new_index[n] = (p, lo, hi)
    take = np.concatenate(rows) if rows else np.empty(0, np.int64)
    actions = {k: v[take] for k, v in alignment.actions.items()}
    ev_ep = np.full_like(alignment.event_episode, -1)
    ev_fr = np.full_like(alignment.event_frame, -1)
    for n, (p, lo, hi) in new_index.items():
        inside = ((alignment.event_episode == p) & (alignment.event_frame >= lo)
                  & (alignment.event_frame < hi))
        ev_ep[inside] = n
        ev_fr[inside] = alignment.event_frame[inside] - lo
    return Alignment(episodes=new_eps, actions=actions, event_episode=ev_ep, event_frame=ev_fr)


# --- the dataset's record ----------------------------------------------------------------------
class QualityLog:
    """Collects every session's outcome during one export and writes meta/quality.json."""

    def __init__(self, filters: QualityFilters, fps: int) -> None:
        self.filters, self.fps = filters, fps
        self.outcomes: list[SessionOutcome] = []
        self.first_episode: dict[str, int] = {}
        self.frames_before = 0
        self.episodes_before = 0

    def filter(self, alignment: Alignment, *, session_id: str, video_path: Path,
               frame_pts: np.ndarray, source_fps: float, events: pa.Table,
               dropped_before: np.ndarray, failed_checks: Sequence[str],
               time_uncertain: np.ndarray | None = None) -> Alignment:
        """Filter one session (sampling its video only if black/frozen is asked for)."""
        self.frames_before += alignment.n_frames
        self.episodes_before += len(alignment.episodes)
        pictures = (sample_pictures(video_path, alignment, frame_pts)
                    if self.filters.drop_black_frozen else None)
        outcome = filter_session(
            alignment, session_id=session_id, filters=self.filters, fps=self.fps,
            source_fps=source_fps, kinds=events.column("kind").to_pylist(),
            dropped_before=dropped_before, failed_checks=failed_checks, pictures=pictures,
            time_uncertain=time_uncertain)
        self.outcomes.append(outcome)
        return outcome.alignment

    def placed(self, session_id: str, first_episode: int) -> None:
        """The writer gave this session's first kept episode dataset index `first_episode`."""
        self.first_episode[session_id] = first_episode

    def refuse_if_nothing_left(self) -> None:
        """Raise CaptureError, saying what each filter removed, if no frame is left."""
        if any(o.alignment.n_frames for o in self.outcomes):
            return
        took = ", ".join(f"{name} {r.frames} frames" for name, r in self.totals().items()
                         if r.frames)
        raise CaptureError(f"the quality filters removed every episode ({took}); nothing was "
                           "written")

    def totals(self) -> dict[str, Removed]:
        out = {name: Removed() for name in FILTERS}
        for o in self.outcomes:
            for name, r in o.removed.items():
                t = out[name]
                t.episodes += r.episodes
                t.frames += r.frames
                t.seconds = round(t.seconds + r.seconds, 6)
                t.sessions += r.sessions
        return out

    def to_dict(self) -> dict[str, Any]:
        totals = self.totals()
        flagged = []
        for o in self.outcomes:
            if self.filters.idle_mode != "flag":
                break
            first = self.first_episode.get(o.session_id)
            for span in o.idle_spans:
                if first is None or span.position not in o.kept_from:
                    continue
                flagged.append({"episode_index": first + o.kept_from.index(span.position),
                                "from_frame": span.from_frame, "to_frame": span.to_frame,
                                "seconds": span.seconds})
        kept_frames = sum(o.alignment.n_frames for o in self.outcomes)
        return {
            "version": 1,
            "filters": self.filters.to_dict(),
            "episodes_before": self.episodes_before,
            "frames_before": self.frames_before,
            "episodes_after": sum(len(o.alignment.episodes) for o in self.outcomes),
            "frames_after": kept_frames,
            "removed": {name: asdict(r) for name, r in totals.items()},
            "sessions": [{"session_id": o.session_id, "failed_checks": list(o.failed_checks),
                          "removed": {n: asdict(r) for n, r in o.removed.items()
                                      if r.frames or r.episodes}}
                         for o in self.outcomes],
            "idle_flagged": flagged,
        }

    def write(self, root: Path) -> dict[str, Any]:
        record = self.to_dict()
        path = root / QUALITY_PATH
        formats.validate_json(record, QUALITY_SCHEMA, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        return record


def format_quality(record: dict[str, Any]) -> list[str]:
    """Lines for the export report: what each filter removed."""
    lines = [f"  quality filters: {record['episodes_before']} -> {record['episodes_after']} "
             f"episodes, {record['frames_before']} -> {record['frames_after']} frames"]
    for name, r in record["removed"].items():
        if r["episodes"] or r["frames"]:
            lines.append(f"    {name:15s} removed {r['episodes']} episodes, {r['frames']} frames "
                         f"({r['seconds']:.1f} s)")
    if record["idle_flagged"]:
        seconds = sum(s["seconds"] for s in record["idle_flagged"])
        lines.append(f"    idle spans flagged (kept): {len(record['idle_flagged'])}, "
                     f"{seconds:.1f} s")
    return lines


def read_quality(root: Path) -> dict[str, Any] | None:
    """meta/quality.json of a dataset, validated (None if the export used no filter)."""
    path = root / QUALITY_PATH
    if not path.is_file():
        return None
    record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    formats.validate_json(record, QUALITY_SCHEMA, path)
    return record


