"""Frame alignment: resample a session's frame timeline onto a constant-rate grid and bin inputs."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from capture.export.vocabulary import (
    GAMEPAD_AXES,
    GAMEPAD_AXIS_ALIASES,
    GAMEPAD_BUTTONS,
    KEY_ALIASES,
    KEY_NAMES,
    MOUSE_BUTTONS,
    MULTI_HOT_DTYPE,
    OTHER,
)
from capture.inputs import HOLDS, EventKind

NS_PER_S = 1_000_000_000
GAP_FACTOR = 3  # consecutive frames further apart than this many source intervals: a pause
DEFAULT_MAX_EPISODE_S = 600.0
_NEVER_NS = np.iinfo(np.int64).max  # release time of a key still held when the stream ends


@cache
def _slot_tables() -> dict[str, dict[str, int]]:
    keys = {name: i for i, name in enumerate(KEY_NAMES)}
    keys.update({alias: keys[target] for alias, target in KEY_ALIASES.items()})
    axes = {name: i for i, name in enumerate(GAMEPAD_AXES)}
    axes.update({alias: axes[target] for alias, target in GAMEPAD_AXIS_ALIASES.items()})
    return {
        "key": keys,
        "button": {name: i for i, name in enumerate(MOUSE_BUTTONS)},
        "gamepad_axis": axes,
        "gamepad_button": {name: i for i, name in enumerate(GAMEPAD_BUTTONS)},
    }


def key_slot(name: str | None) -> int:
    """The multi-hot slot of an X11 keysym name; unknown keys share the 'other' slot."""
    return _slot_tables()["key"].get(name or "", KEY_NAMES.index(OTHER))


def grid_offsets_ns(indices: np.ndarray | int, fps: int) -> np.ndarray:
    """round(i * 1e9 / fps) in exact integer arithmetic (halves round up)."""
    i = np.asarray(indices, dtype=np.int64)
    return (2 * i * NS_PER_S + fps) // (2 * fps)


@dataclass(frozen=True, slots=True)
class AlignmentStats:
    """How far resampling moved frames in time, and which source frames it skipped or reused."""

    offset_ms_p50: float
    offset_ms_p95: float
    offset_ms_max: float
    source_frames: int  # source frames whose capture time lies in the episode's span
    dropped: int        # of those, shown in no output frame
    repeated: int       # output frames showing the same source frame as the frame before
    uncertain_sources: int = 0  # output frames showing a frame whose time is not established


@dataclass(frozen=True, slots=True, eq=False)
class EpisodeGrid:
    """One episode: output frame i covers [start_ns + round(i*1e9/fps), the next grid time).

    The last frame's interval ends at end_ns, which is the next grid time except where that
    would reach into the next run of the session: then it ends where the next run starts.
    """

    segment_index: int          # continuous run of the session (runs are split by pauses)
    part_index: int             # piece of that run when it is longer than max_episode_s
    start_ns: int
    end_ns: int
    fps: int
    source_index: np.ndarray    # int64 row of the session's frame timeline shown in each frame
    capture_time_ns: np.ndarray  # int64 capture time of that source frame
    stats: AlignmentStats

    @property
    def n_frames(self) -> int:
        return len(self.source_index)

    @property
    def grid_ns(self) -> np.ndarray:
        """The grid time (interval start) of every frame."""
        return self.start_ns + grid_offsets_ns(np.arange(self.n_frames), self.fps)

    @property
    def bounds_ns(self) -> np.ndarray:
        """n_frames + 1 times: frame i spans [bounds[i], bounds[i+1])."""
        return np.append(self.grid_ns, np.int64(self.end_ns))


def continuous_runs(capture_times_ns: np.ndarray, source_fps: float,
                    dropped_before: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Row ranges [lo, hi) of frames recorded without a pause between them.

    A gap of more than 3 source intervals is a pause (focus lost, idle), unless the recorder
    counted the missed slots (`dropped_before` of the frame after it): then it was a stall, the
    run goes on, and input during the stall stays on the grid.
    """
    times = np.asarray(capture_times_ns, dtype=np.int64)
    if len(times) == 0:
        return []
    gaps = np.diff(times)
    if (gaps < 0).any():
        raise ValueError(f"capture times go backwards at frame {int(np.argmax(gaps < 0)) + 1}")
    interval = NS_PER_S / source_fps
    unexplained = gaps.astype(np.float64)
    if dropped_before is not None:
        unexplained = unexplained - np.asarray(dropped_before[1:], dtype=np.float64) * interval
    breaks = np.flatnonzero(unexplained > GAP_FACTOR * interval) + 1
    edges = [0, *breaks.tolist(), len(times)]
    return list(itertools.pairwise(edges))


def _nearest(times: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index into sorted `times` of the value nearest each target; ties go to the earlier one."""
    after = np.searchsorted(times, targets, side="left").clip(0, len(times) - 1)
    before = (after - 1).clip(0, None)
    take_after = (times[after] - targets) < (targets - times[before])
    return np.where(take_after, after, before)


def _fit_frames(start_ns: int, n: int, fps: int, limit_ns: int | None) -> tuple[int, int]:
    """(frames, end_ns): at most n frames, all starting before limit_ns (the next run's start),
    the last one's interval cut off at limit_ns if it would reach past it."""
    end_ns = start_ns + int(grid_offsets_ns(n, fps))
    if limit_ns is None or end_ns <= limit_ns:
        return n, end_ns
    while n > 1 and start_ns + int(grid_offsets_ns(n - 1, fps)) >= limit_ns:
        n -= 1
    return n, limit_ns


def _episode(times: np.ndarray, lo: int, hi: int, segment: int, part: int, start_ns: int,
             end_ns: int, n: int, fps: int, uncertain: np.ndarray | None = None) -> EpisodeGrid:
    run = times[lo:hi]
    grid = start_ns + grid_offsets_ns(np.arange(n), fps)
    # A frame whose capture time is not established (time_uncertain) is never a grid frame's
    # source while its run has any frame whose time is: the nearest such frame is shown instead,
    # and how far it is from the grid time counts in the offsets. Only a run with no established
    # time at all falls back to its uncertain frames (counted in uncertain_sources).
    doubtful = (np.zeros(hi - lo, dtype=bool) if uncertain is None
                else np.asarray(uncertain[lo:hi], dtype=bool))
    usable = np.flatnonzero(~doubtful) if not doubtful.all() else np.arange(hi - lo)
    chosen = usable[_nearest(run[usable], grid)]
    capture = run[chosen]
    offsets_ms = np.abs(capture - grid) / 1e6
    in_span = np.flatnonzero((run >= start_ns) & (run < end_ns))
    stats = AlignmentStats(
        offset_ms_p50=float(np.percentile(offsets_ms, 50)),
        offset_ms_p95=float(np.percentile(offsets_ms, 95)),
        offset_ms_max=float(offsets_ms.max()),
        source_frames=len(in_span),
        dropped=len(np.setdiff1d(in_span, chosen)),
        repeated=int(np.count_nonzero(np.diff(chosen) == 0)),
        uncertain_sources=int(np.count_nonzero(doubtful[chosen])),
    )
    return EpisodeGrid(segment_index=segment, part_index=part, start_ns=start_ns, end_ns=end_ns,
                       fps=fps, source_index=chosen + lo, capture_time_ns=capture, stats=stats)


def build_episodes(capture_times_ns: np.ndarray, *, source_fps: float, fps: int,
                   max_episode_s: float = DEFAULT_MAX_EPISODE_S,
                   dropped_before: np.ndarray | None = None,
                   uncertain: np.ndarray | None = None) -> list[EpisodeGrid]:
    """Split a session's frame timeline into runs, runs into episodes, episodes into grid frames.

    `uncertain` (the frames' time_uncertain, null as False) keeps frames whose time is not
    established off the grid wherever their run has another (see _episode).

    A run covers its first capture time to its last plus one source interval, rounded to whole
    output frames (at least one); its last frame never reaches into the next run (see
    EpisodeGrid).
    """
    if fps <= 0 or source_fps <= 0 or max_episode_s <= 0:
        raise ValueError("fps, source fps and max_episode_s must be positive")
    times = np.asarray(capture_times_ns, dtype=np.int64)
    runs = continuous_runs(times, source_fps, dropped_before)
    per_episode = max(1, int(max_episode_s * fps + 1e-9))
    source_interval_ns = NS_PER_S / source_fps
    episodes: list[EpisodeGrid] = []
    for segment, (lo, hi) in enumerate(runs):
        first, last = int(times[lo]), int(times[hi - 1])
        limit = int(times[hi]) if hi < len(times) else None
        n_run = max(1, round((last - first + source_interval_ns) * fps / NS_PER_S))
        start, part = first, 0
        while n_run > 0 and (limit is None or start < limit):
            n, end = _fit_frames(start, min(n_run, per_episode), fps, limit)
            episodes.append(_episode(times, lo, hi, segment, part, start, end, n, fps,
                                     uncertain))
            start = end
            n_run -= n
            part += 1
    return episodes


@dataclass(frozen=True, slots=True, eq=False)
class Alignment:
    """Episodes of one session, per-frame actions (episodes concatenated) and event locations."""

    episodes: list[EpisodeGrid]
    actions: dict[str, np.ndarray]  # feature -> (total frames, width) array
    event_episode: np.ndarray  # int64 per input event row: episode position, -1 if in none
    event_frame: np.ndarray    # int64 per input event row: frame within the episode, -1 if none

    @property
    def n_frames(self) -> int:
        return sum(e.n_frames for e in self.episodes)

    def episode_rows(self, position: int) -> slice:
        """Rows of `actions` belonging to episode `position` of this session."""
        start = sum(e.n_frames for e in self.episodes[:position])
        return slice(start, start + self.episodes[position].n_frames)


class _Frames:
    """All output frames of a session in time order, as [starts, ends) arrays."""

    def __init__(self, episodes: list[EpisodeGrid]) -> None:
        bounds = [e.bounds_ns for e in episodes]
        self.starts = np.concatenate([b[:-1] for b in bounds]) if bounds else np.empty(0, np.int64)
        self.ends = np.concatenate([b[1:] for b in bounds]) if bounds else np.empty(0, np.int64)
        self.count = len(self.starts)

    def locate(self, t: np.ndarray) -> np.ndarray:
        """Position of the frame whose interval holds each time, or -1."""
        if self.count == 0:
            return np.full(len(t), -1, dtype=np.int64)
        pos = np.searchsorted(self.starts, t, side="right") - 1
        inside = (pos >= 0) & (t < self.ends[pos.clip(0, None)])
        return np.where(inside, pos, -1).astype(np.int64)

    def held(self, slots: np.ndarray, since: np.ndarray, until: np.ndarray,
             width: int) -> np.ndarray:
        """Multi-hot of slots held over [since, until) in any part of each frame's interval.

        A hold that starts and ends inside one frame (even at one instant) marks that frame.
        """
        out = np.zeros((self.count, width), dtype=MULTI_HOT_DTYPE)
        if self.count == 0 or len(slots) == 0:
            return out
        first = np.searchsorted(self.ends, since, side="right")
        last = np.searchsorted(self.starts, until, side="left") - 1
        last = np.maximum(last, self.locate(since))
        keep = first <= last
        first, last, slots = first[keep], last[keep], slots[keep]
        for slot in np.unique(slots).tolist():
            mine = slots == slot
            # +1 where a hold starts, -1 after it ends: frames with a positive running sum are held
            diff = np.zeros(self.count + 1, dtype=np.int64)
            np.add.at(diff, first[mine], 1)
            np.add.at(diff, last[mine] + 1, -1)
            out[:, slot] = np.cumsum(diff)[:-1] > 0
        return out


def _mask(events: pa.Table, kind: EventKind) -> np.ndarray:
    return np.asarray(pc.equal(events.column("kind"), kind.value).to_numpy(zero_copy_only=False))


def _slots(column: pa.ChunkedArray, table: str, missing: int) -> tuple[np.ndarray, np.ndarray]:
    """Vocabulary slot of each value (names not in the vocabulary, or null, get `missing`), and
    an identity per value: its slot, or for names outside the vocabulary the name itself."""
    lookup = _slot_tables()[table]
    encoded = column.combine_chunks().dictionary_encode()
    values = encoded.dictionary.to_pylist()
    mapped = np.array([lookup.get(v, missing) for v in values] + [missing], dtype=np.int64)
    indices = encoded.indices.fill_null(len(values)).to_numpy(zero_copy_only=False)
    indices = indices.astype(np.int64)
    slots = mapped[indices]
    identity = np.where(slots == missing, len(lookup) + indices, slots)
    return slots, identity


def _floats(events: pa.Table, name: str) -> np.ndarray:
    values = events.column(name).fill_null(0.0).to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float64)


def _hold_intervals(t: np.ndarray, slots: np.ndarray, identity: np.ndarray,
                    is_press: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(slot, since, until) of every hold; a repeated press continues a hold.

    Holds are tracked per identity so that two different keys sharing the 'other' slot do not
    end each other, while 'W' pressed and 'w' released (same slot) are one key.
    """
    held: dict[int, tuple[int, int]] = {}  # identity -> (slot, since)
    out_slots, out_since, out_until = [], [], []
    for time, slot, ident, press in zip(t.tolist(), slots.tolist(), identity.tolist(),
                                        is_press.tolist(), strict=True):
        if press:
            held.setdefault(ident, (slot, time))
        elif ident in held:
            start_slot, since = held.pop(ident)
            out_slots.append(start_slot)
            out_since.append(since)
            out_until.append(time)
    for slot, since in held.values():
        out_slots.append(slot)
        out_since.append(since)
        out_until.append(int(_NEVER_NS))
    return (np.array(out_slots, dtype=np.int64), np.array(out_since, dtype=np.int64),
            np.array(out_until, dtype=np.int64))


def _held_feature(events: pa.Table, t: np.ndarray, frames: _Frames, press_kind: EventKind,
                  name_column: str, table: str, width: int, missing: int) -> np.ndarray:
    """Multi-hot of what `press_kind` events hold until their releases (see _hold_intervals)."""
    press, release = _mask(events, press_kind), _mask(events, HOLDS[press_kind])
    rows = np.flatnonzero(press | release)
    slots, identity = _slots(events.column(name_column).take(rows), table, missing)
    known = slots >= 0
    rows, slots, identity = rows[known], slots[known], identity[known]
    holds = _hold_intervals(t[rows], slots, identity, press[rows])
    return frames.held(*holds, width=width)


def frame_actions(events: pa.Table, episodes: list[EpisodeGrid]) -> tuple[
        dict[str, np.ndarray], np.ndarray]:
    """Per-frame actions over [g_i, g_{i+1}) and each event's frame position (-1: in none).

    `events` must be sorted by t_ns (ties in recorded order), as events.parquet is.
    """
    frames = _Frames(episodes)
    n = frames.count
    t = events.column("t_ns").to_numpy(zero_copy_only=False).astype(np.int64)
    if len(t) and (np.diff(t) < 0).any():
        raise ValueError("events are not sorted by t_ns")
    pos = frames.locate(t)
    placed = pos >= 0
    actions: dict[str, np.ndarray] = {}

    def summed(kind: EventKind, column: str) -> np.ndarray:
        rows = placed & _mask(events, kind)
        return np.bincount(pos[rows], weights=_floats(events, column)[rows], minlength=n)

    actions["action.mouse_delta"] = np.stack(
        [summed(EventKind.MOTION, "dx"), summed(EventKind.MOTION, "dy")], axis=1).astype(np.float32)
    actions["action.mouse_wheel"] = np.stack(
        [summed(EventKind.WHEEL, "dy"), summed(EventKind.WHEEL, "dx")], axis=1).astype(np.float32)

    other_key = KEY_NAMES.index(OTHER)
    actions["action.mouse_buttons"] = _held_feature(
        events, t, frames, EventKind.BUTTON_PRESS, "button", "button", len(MOUSE_BUTTONS),
        missing=-1)
    actions["action.keys_held"] = _held_feature(
        events, t, frames, EventKind.KEY_PRESS, "key", "key", len(KEY_NAMES), missing=other_key)
    # A synthetic press reopens a hold at a segment start: held, but not pressed in that frame.
    genuine = ~events.column("synthetic").to_numpy(zero_copy_only=False).astype(bool)
    presses = np.flatnonzero(placed & _mask(events, EventKind.KEY_PRESS) & genuine)
    pressed = np.zeros((n, len(KEY_NAMES)), dtype=MULTI_HOT_DTYPE)
    pressed[pos[presses], _slots(events.column("key").take(presses), "key", other_key)[0]] = 1
    actions["action.keys_pressed"] = pressed

    axes = np.zeros((n, len(GAMEPAD_AXES)), dtype=np.float32)
    axis_rows = np.flatnonzero(_mask(events, EventKind.GAMEPAD_AXIS))
    axis_slots, _ = _slots(events.column("axis").take(axis_rows), "gamepad_axis", -1)
    values = _floats(events, "value")
    for slot in range(len(GAMEPAD_AXES)):
        rows = axis_rows[axis_slots == slot]
        if len(rows) and n:
            last = np.searchsorted(t[rows], frames.ends, side="left") - 1
            axes[:, slot] = np.where(last >= 0, values[rows][last.clip(0, None)], 0.0)
    actions["action.gamepad_axes"] = axes
    actions["action.gamepad_buttons"] = _held_feature(
        events, t, frames, EventKind.GAMEPAD_BUTTON_PRESS, "axis", "gamepad_button",
        len(GAMEPAD_BUTTONS), missing=-1)
    return actions, pos


def align_session(capture_times_ns: np.ndarray, events: pa.Table, *, source_fps: float,
                  fps: int, max_episode_s: float = DEFAULT_MAX_EPISODE_S,
                  dropped_before: np.ndarray | None = None,
                  uncertain: np.ndarray | None = None) -> Alignment:
    """Episodes, per-frame actions and event locations for one session (pure, no I/O)."""
    episodes = build_episodes(capture_times_ns, source_fps=source_fps, fps=fps,
                              max_episode_s=max_episode_s, dropped_before=dropped_before,
                              uncertain=uncertain)
    order = np.argsort(events.column("t_ns").to_numpy(zero_copy_only=False), kind="stable")
    in_order = events.take(order)
    actions, pos_sorted = frame_actions(in_order, episodes)
    pos = np.empty_like(pos_sorted)
    pos[order] = pos_sorted
    starts = np.cumsum([0] + [e.n_frames for e in episodes])
    episode = np.searchsorted(starts, pos, side="right") - 1
    event_episode = np.where(pos >= 0, episode, -1).astype(np.int64)
    event_frame = np.where(pos >= 0, pos - starts[episode.clip(0, len(episodes))], -1)
    return Alignment(episodes=episodes, actions=actions, event_episode=event_episode,
                     event_frame=event_frame.astype(np.int64))
