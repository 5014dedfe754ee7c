"""OBS frame timeline: the clock script's log and the recorded file give each frame a host time."""

# How a file frame gets its time (see obs_clock_script.py for what is logged):
# 1. File frames are numbered by PTS: k = round((pts - pts0) * fps). The encoder takes every slot
#    the video output delivers, except those before its start and those OBS's pause cut out, so
#    within one stretch between pauses file frame k shows delivered slot k + offset.
# 2. The offset of the first frame (OBS starts the file tens of ms after the start signal, waiting
#    for audio) and the slots each pause cut out (predicted to +-2 slots from OBS's own rule) are
#    found by matching the luma fingerprints of decoded file frames with the logged ones.
# 3. A delivered slot is either a fresh picture, rendered at the tick whose video time equals the
#    slot's, or a repeat of the previous one (render lag or a full frame cache). Its capture time
#    is the host time of the tick that rendered the picture; repeats keep that time.
# 4. Every frame is then checked, and marked `time_uncertain` where its time is not established:
#    its decoded picture must match the picture logged for its slot (so that picture was on the
#    screen at the time given, to the fingerprint's resolution), its render tick must be logged
#    and come before the delivery of its picture, and no placement up to ALTERNATIVE_SLOTS off
#    that fits its picture equally, with another picture logged and another tick, may be left
#    open by the pictures around it (see _doubts).
#
# Why step 4 exists (issue 8, OBS at 60 fps on 2 loaded cores, 90 % of render ticks lagged): OBS
# often stalls for a while when a recording starts, so the first MATCH_WINDOW frames of the file
# all showed one picture. Every frame 0 candidate then matched equally, the prior (2 slots after
# the start event) won the tie, and when it was wrong every later picture change gave the last
# two frames of the old picture the tick time of the new one: "a stale picture given a fresh
# tick's time", in pairs, late by the render gap (up to seconds after a stall). Frame 0 is now
# searched over a window that grows until the pictures tell the candidates apart, and step 4
# catches whatever placement still cannot be established.

from __future__ import annotations

import base64
import binascii
import itertools
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from capture.errors import BadInputError
from capture.video.obs.obs_clock_script import GRID

FINGERPRINT_SIZE = GRID * GRID
NOISE_LEVELS = 2          # luma levels of coding noise ignored in each fingerprint cell
NO_MATCH_COST = 100.0     # cost of comparing with a slot the log does not have
MATCH_WINDOW = 30         # file frames compared when placing the start or a pause
START_SEARCH_S = (2.0, 1.0)   # search frame 0 from 2 s before to 1 s after the start event
START_PRIOR_SLOTS = 2     # frame 0 was 2-3 deliveries after the start event's last one
BOUNDARY_SEARCH = 2       # slots either side of a predicted pause boundary
TIE_PENALTY = 0.05        # per slot away from the prediction: static pictures match anywhere
PAUSE_LEAD_SLOTS = 2      # OBS pauses at the slot ~2 intervals after "now" (get_closest_v_ts)
POOR_MATCH_COST = 4.0     # a mean cost above this means the content did not match the log
REFINE_PASSES = 2
START_EVIDENCE = 12.0     # summed distance by which frame 0's best slot must beat the next best
MAX_START_WINDOW = 4096   # frames the start window may grow to while the pictures all look alike
FRAME_MISMATCH = 8.0      # a file frame further than this from its slot's logged picture: wrong
ALTERNATIVE_SLOTS = 3     # placements this many slots either side are checked for ambiguity

IntArray = npt.NDArray[np.int64]
FingerprintReader = Callable[[Sequence[int]], npt.NDArray[np.uint8]]


@dataclass(frozen=True, slots=True)
class StateChange:
    """A recording state change seen by the script ('pause', 'unpause', 'stop')."""

    kind: str
    host_ns: int
    last_ts: int     # slot time of the last frame delivered before it


@dataclass(slots=True)
class ClockLog:
    """One recording's clock log, parsed."""

    hello: dict[str, Any]
    start: dict[str, Any]
    interval_ns: int
    fps: Fraction
    tick_ts: IntArray
    tick_host: IntArray
    tick_lagged: IntArray
    frame_ts: IntArray
    frame_host: IntArray
    frame_repeated: npt.NDArray[np.bool_]
    fingerprints: npt.NDArray[np.uint8]          # (frames, FINGERPRINT_SIZE)
    has_fingerprint: npt.NDArray[np.bool_]
    changes: list[StateChange]
    ended: bool
    truncated: bool
    watchdog: dict[str, Any] | None = None   # the script stopped the recording: recorder gone


def parse_clock_log(lines: Iterable[bytes | str], source: str = "clock log") -> ClockLog:
    """Parse the script's JSON lines; a cut-off last line (a crash) is dropped."""
    raw = [line for line in lines if line.strip()]
    items: list[list[Any]] = []
    truncated = False
    for number, line in enumerate(raw):
        try:
            item = json.loads(line)
            if not isinstance(item, list) or not item:
                raise ValueError("not a JSON array")
        except ValueError as exc:
            if number == len(raw) - 1:
                truncated = True
                break
            raise BadInputError(f"line {number + 1} is not a clock record ({exc})", source) \
                from None
        items.append(item)
    starts = [i for i, item in enumerate(items) if item[0] == "start"]
    if not starts:
        raise BadInputError("the clock log has no start record", source)
    start = items[starts[-1]][1]
    hellos = [item[1] for item in items if item[0] == "hello"]
    ticks = [item for item in items if item[0] == "t"]
    frames = [item for item in items if item[0] == "f"]
    changes = [StateChange(item[0], int(item[1]["host_ns"]), int(item[1]["last_ts"]))
               for item in items[starts[-1] + 1:] if item[0] in ("pause", "unpause", "stop")]
    fingerprints = np.zeros((len(frames), FINGERPRINT_SIZE), dtype=np.uint8)
    has_fingerprint = np.zeros(len(frames), dtype=bool)
    for row, item in enumerate(frames):
        try:
            decoded = base64.b64decode(item[4]) if item[4] else b""
        except (binascii.Error, TypeError):
            decoded = b""
        if len(decoded) == FINGERPRINT_SIZE:
            fingerprints[row] = np.frombuffer(decoded, dtype=np.uint8)
            has_fingerprint[row] = True
    return ClockLog(
        hello=hellos[-1] if hellos else {}, start=start,
        interval_ns=int(start["interval_ns"]),
        fps=Fraction(int(start["fps_num"]), int(start["fps_den"])),
        tick_ts=np.array([t[1] for t in ticks], dtype=np.int64),
        tick_host=np.array([t[2] for t in ticks], dtype=np.int64),
        tick_lagged=np.array([t[4] for t in ticks], dtype=np.int64),
        frame_ts=np.array([f[1] for f in frames], dtype=np.int64),
        frame_host=np.array([f[2] for f in frames], dtype=np.int64),
        frame_repeated=np.array([bool(f[3]) for f in frames], dtype=bool),
        fingerprints=fingerprints, has_fingerprint=has_fingerprint, changes=changes,
        ended=any(item[0] == "end" for item in items[starts[-1]:]), truncated=truncated,
        watchdog=next((item[1] for item in items[starts[-1]:] if item[0] == "watchdog"), None))


def fingerprint_distance(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> npt.NDArray[Any]:
    """Sum over cells of the luma difference beyond coding noise (0 for the same picture)."""
    difference = np.abs(a.astype(np.int16) - b.astype(np.int16)) - NOISE_LEVELS
    distance: npt.NDArray[Any] = np.clip(difference, 0, None).sum(axis=-1).astype(np.float64)
    return distance


@dataclass(frozen=True, slots=True)
class Cut:
    """Slots [first, end) that a pause kept out of the file.

    `open_end`: the recording stopped while paused. OBS then sometimes still writes the frame
    of about the moment it was told to stop; where that is, only the pictures can tell.
    """

    first: int
    end: int
    open_end: bool = False


@dataclass(slots=True)
class Timeline:
    """The frames.jsonl records of one OBS recording and how they were placed."""

    records: list[dict[str, Any]]
    first_slot_ts: int | None
    cuts: list[Cut]
    start_cost: float | None = None      # mean fingerprint distance where frame 0 was placed
    start_margin: float | None = None    # how much worse the next best placement was
    tail_cost: float | None = None       # mean distance over the file's last frames
    notes: list[str] = field(default_factory=list)

    @property
    def repeated_frames(self) -> int:
        return sum(bool(r["repeated"]) for r in self.records)

    @property
    def dropped_slots(self) -> int:
        return sum(int(r["dropped_before"]) for r in self.records)


class _Slots:
    """The log's deliveries indexed by slot number (slot 0 = the first delivery's time)."""

    def __init__(self, log: ClockLog) -> None:
        self.log = log
        self.interval = log.interval_ns
        self.base_ts = int(log.frame_ts[0])
        numbers = np.rint((log.frame_ts - self.base_ts) / self.interval).astype(np.int64)
        self.count = int(numbers.max()) + 1
        self.delivery = np.full(self.count, -1, dtype=np.int64)
        self.delivery[numbers] = np.arange(len(numbers))
        # The slot whose render produced each delivered picture: repeats inherit it.
        self.render = numbers.copy()
        for row in range(1, len(numbers)):
            if log.frame_repeated[row]:
                self.render[row] = self.render[row - 1]
        tick_slots = np.rint((log.tick_ts - self.base_ts) / self.interval).astype(np.int64)
        self.tick_host = dict(zip(tick_slots.tolist(), log.tick_host.tolist(), strict=True))
        offsets = log.tick_host - log.tick_ts
        self.tick_offset = int(np.median(offsets)) if len(offsets) else 0
        # Per slot: the render slot of the picture delivered there (-1: nothing delivered), the
        # host time of that render's tick (-1: not logged) and when that picture was delivered
        # first (the delivery of the render slot itself; -1 if not logged).
        self.render_of_slot = np.full(self.count, -1, dtype=np.int64)
        self.render_of_slot[numbers] = self.render
        tick = np.full(self.count, -1, dtype=np.int64)
        inside = (tick_slots >= 0) & (tick_slots < self.count)
        tick[tick_slots[inside]] = log.tick_host[inside]
        rendered = self.render_of_slot >= 0
        self.slot_time = np.where(rendered, tick[self.render_of_slot.clip(0)], -1)
        first_delivery = self.delivery[self.render_of_slot.clip(0)]
        self.slot_delivered = np.where(rendered & (first_delivery >= 0),
                                       log.frame_host[first_delivery.clip(0)], -1)

    def times(self, slots: IntArray) -> IntArray:
        """Host time of the tick that rendered the picture of each slot; -1 where unknown."""
        inside = (slots >= 0) & (slots < self.count)
        return np.where(inside, self.slot_time[slots.clip(0, self.count - 1)], -1)

    def number(self, ts: int) -> int:
        return round((ts - self.base_ts) / self.interval)

    def fingerprints(self, slots: IntArray) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]:
        inside = (slots >= 0) & (slots < self.count)
        rows = np.where(inside, self.delivery[np.clip(slots, 0, self.count - 1)], -1)
        valid = rows >= 0
        valid[valid] = self.log.has_fingerprint[rows[valid]]
        return self.log.fingerprints[np.clip(rows, 0, None)], valid

    def capture_ns(self, render_slot: int) -> tuple[int, bool]:
        """Host time of the tick that rendered `render_slot`; (estimate, False) if not logged."""
        host = self.tick_host.get(render_slot)
        if host is not None:
            return host, True
        return self.base_ts + render_slot * self.interval + self.tick_offset, False


def slots_for(positions: IntArray, first_slot: int, cuts: Sequence[Cut]) -> IntArray:
    """The slot shown by file frames numbered `positions`, given frame 0's slot and the cuts
    (in order, not overlapping; those starting at or before frame 0's slot are ignored)."""
    cuts = [cut for cut in cuts if cut.first > first_slot]
    if not cuts:
        return first_slot + positions
    lengths = np.array([cut.end - cut.first for cut in cuts], dtype=np.int64)
    skipped = np.concatenate(([0], np.cumsum(lengths)))
    boundaries = np.array([cut.first for cut in cuts], dtype=np.int64) - first_slot - skipped[:-1]
    return first_slot + positions + skipped[np.searchsorted(boundaries, positions, side="right")]


class _Placer:
    """Chooses frame 0's slot and each pause's cut by matching fingerprints."""

    def __init__(self, slots: _Slots, numbers: IntArray, read: FingerprintReader) -> None:
        self.slots = slots
        self.numbers = numbers
        self.read = read
        self.cache: dict[int, npt.NDArray[np.uint8]] = {}

    def file_fingerprints(self, positions: Sequence[int]) -> npt.NDArray[np.uint8]:
        missing = sorted({p for p in positions if p not in self.cache})
        if missing:
            for position, fingerprint in zip(missing, self.read(missing), strict=True):
                self.cache[position] = fingerprint
        return np.array([self.cache[p] for p in positions], dtype=np.uint8).reshape(
            -1, FINGERPRINT_SIZE)

    def cost(self, positions: list[int], first_slot: int, cuts: Sequence[Cut]) -> float:
        if not positions:
            return 0.0
        wanted = slots_for(self.numbers[positions], first_slot, cuts)
        logged, valid = self.slots.fingerprints(wanted)
        distance = fingerprint_distance(self.file_fingerprints(positions), logged)
        return float(np.where(valid, distance, NO_MATCH_COST).mean())

    def window(self, around: int) -> list[int]:
        """File positions of about MATCH_WINDOW frames numbered from `around` on."""
        lo = int(np.searchsorted(self.numbers, around - BOUNDARY_SEARCH - MATCH_WINDOW // 2))
        hi = int(np.searchsorted(self.numbers, around + BOUNDARY_SEARCH + MATCH_WINDOW // 2))
        return list(range(max(0, lo), min(len(self.numbers), hi)))

    def best(self, candidates: list[tuple[float, Any]], positions: list[int],
             build: Callable[[Any], tuple[int, list[Cut]]]) -> tuple[Any, float, float | None,
                                                                    float | None]:
        """The candidate with the lowest cost + tie penalty: (choice, cost, margin, evidence).

        The margin is how much worse the best candidate with another frame 0 slot was; the
        evidence is by how much its pictures alone matched worse, summed over `positions`
        (None if there was no other slot to try).
        """
        scored = []
        for penalty, candidate in candidates:
            first_slot, cuts = build(candidate)
            cost = self.cost(positions, first_slot, cuts)
            scored.append((cost + penalty, first_slot, candidate, cost))
        scored.sort(key=lambda item: item[0])
        best_slot, best_cost = scored[0][1], scored[0][3]
        others = [(total, cost) for total, slot, _, cost in scored if slot != best_slot]
        margin = others[0][0] - scored[0][0] if others else None
        evidence = (min(cost for _, cost in others) - best_cost) * len(positions) \
            if others else None
        return scored[0][2], scored[0][0], margin, evidence


def predicted_cuts(log: ClockLog, slots: _Slots) -> list[Cut]:
    """Each pause's cut as OBS's get_closest_v_ts would place it from the logged moments."""
    cuts: list[Cut] = []
    paused_at: int | None = None
    for change in log.changes:
        lead = math.floor((change.host_ns - change.last_ts) / log.interval_ns) + PAUSE_LEAD_SLOTS
        slot = slots.number(change.last_ts) + max(lead, 1)
        if change.kind == "pause" and paused_at is None:
            paused_at = slot
        elif change.kind in ("unpause", "stop") and paused_at is not None:
            cuts.append(Cut(paused_at, max(slot, paused_at + 1), change.kind == "stop"))
            paused_at = None
    if paused_at is not None:
        cuts.append(Cut(paused_at, slots.count + 1, True))
    return cuts


def effective_cuts(first_slot: int, cuts: Sequence[Cut | None]) -> list[Cut]:
    """The cuts that shape the file: those starting after frame 0 (earlier ones ended before)."""
    return [cut for cut in cuts if cut is not None and cut.first > first_slot]


def _ordered(cuts: Sequence[Cut]) -> bool:
    return all(b.first >= a.end for a, b in itertools.pairwise(cuts))


def build_timeline(log: ClockLog, pts: Sequence[int], time_base: Fraction,
                   read_fingerprints: FingerprintReader) -> Timeline:
    """Records (schemas/frames.v1.arrow.json) for the file frames with presentation times `pts`.

    `pts` may come in any order (decode order, with B-frames), in the stream's `time_base`;
    records come out in presentation order. `read_fingerprints(positions)` returns the
    fingerprints of the file frames at those positions (0-based, in presentation order).
    """
    if not len(pts):
        return Timeline(records=[], first_slot_ts=None, cuts=[], notes=["the file has no frames"])
    if not len(log.frame_ts):
        raise BadInputError("the clock log has no delivered frames (the raw video hook failed)")
    slots = _Slots(log)
    pts_array = np.unique(np.asarray(pts, dtype=np.int64))
    numbers = np.array([round((p - int(pts_array[0])) * time_base * log.fps) for p in pts_array],
                       dtype=np.int64)
    placer = _Placer(slots, numbers, read_fingerprints)
    notes: list[str] = []

    # The start event names the last frame delivered before it, or none (ts 0): then the file
    # starts among the first frames delivered (they are hooked from "recording starting" on).
    start_ts = int(log.start["last_ts"])
    anchor = slots.number(start_ts) if start_ts >= slots.base_ts else 0
    prior = min(anchor + START_PRIOR_SLOTS, slots.count - 1)
    fps = float(log.fps)
    lo = max(0, prior - round(START_SEARCH_S[0] * fps))
    hi = min(slots.count - 1, prior + round(START_SEARCH_S[1] * fps))
    predicted: list[Cut | None] = list(predicted_cuts(log, slots))
    chosen = list(predicted)
    first_slot = min(max(prior, lo), hi)
    fingerprinted = bool(log.has_fingerprint.any())
    start_cost = start_margin = evidence = None
    if fingerprinted:
        # The first frames often all show one picture (OBS stalls when a recording starts):
        # grow the window until the pictures tell frame 0's candidates apart.
        window = min(MATCH_WINDOW, len(numbers))
        while True:
            head = list(range(window))
            chosen = list(predicted)
            for _ in range(REFINE_PASSES):
                candidates = _start_candidates(lo, hi, prior, chosen, predicted)
                (first_slot, chosen), start_cost, start_margin, evidence = placer.best(
                    candidates, head, lambda c: (c[0], effective_cuts(c[0], c[1])))
                chosen = _place_cuts(placer, first_slot, chosen, predicted)
            limit = min(len(numbers), MAX_START_WINDOW)
            if evidence is None or evidence >= START_EVIDENCE or window >= limit:
                break
            window = min(2 * window, limit)
    else:
        notes.append("the clock log has no fingerprints (unsupported color format?): frame 0 "
                     "and pauses placed from the logged moments alone, +-2 frames")
    cuts = effective_cuts(first_slot, chosen)
    slot_of_frame = slots_for(numbers, first_slot, cuts)
    tail = list(range(max(0, len(numbers) - MATCH_WINDOW), len(numbers)))
    tail_cost = placer.cost(tail, first_slot, cuts) if fingerprinted else None
    if start_cost is not None and start_cost - TIE_PENALTY * abs(first_slot - prior) \
            > POOR_MATCH_COST:
        notes.append(f"warning: frame 0 matched the log poorly (distance {start_cost:.1f}): "
                     "capture times may be off")
    if tail_cost is not None and tail_cost > POOR_MATCH_COST:
        notes.append(f"warning: the last frames matched the log poorly (distance {tail_cost:.1f}): "
                     "capture times may be off")
    file_fingerprints = (placer.file_fingerprints(list(range(len(numbers))))
                         if fingerprinted else None)
    start_proven = evidence is not None and evidence >= START_EVIDENCE if fingerprinted \
        else False
    records, reasons = _records(slots, numbers, pts_array, slot_of_frame, file_fingerprints,
                                start_proven)
    if reasons.get("no render tick logged"):
        notes.append(f"{reasons['no render tick logged']} frames had no logged render tick: "
                     "their times are estimated from the slot time")
    uncertain = sum(bool(r["time_uncertain"]) for r in records)
    if uncertain:
        why = ", ".join(f"{count} {reason}" for reason, count in reasons.items() if count)
        notes.append(f"{uncertain} of {len(records)} frames have a capture time that could not "
                     f"be established (marked time_uncertain): {why}")
    return Timeline(records=records, first_slot_ts=slots.base_ts + first_slot * slots.interval,
                    cuts=cuts, start_cost=start_cost, start_margin=start_margin,
                    tail_cost=tail_cost, notes=notes)


def _start_candidates(lo: int, hi: int, prior: int, chosen: list[Cut | None],
                      predicted: list[Cut | None]) -> list[tuple[float, Any]]:
    """(penalty, (frame 0's slot, cuts)) to try; a pause that may fall among the first frames
    is varied together with frame 0, since either one shifts all the frames after it."""
    near = next((i for i, cut in enumerate(predicted) if cut is not None
                 and lo <= cut.end and cut.first - BOUNDARY_SEARCH <= hi + MATCH_WINDOW), None)
    variants: list[tuple[float, list[Cut | None]]] = [(0.0, list(chosen))]
    if near is not None:
        guess = predicted[near]
        assert guess is not None
        variants = [(TIE_PENALTY * (abs(first - guess.first) + abs(end - guess.end)),
                     [*chosen[:near], Cut(first, max(end, first + 1), guess.open_end),
                      *chosen[near + 1:]])
                    for first, end in _around(guess)]
    return [(TIE_PENALTY * abs(slot - prior) + penalty, (slot, cuts))
            for slot in range(lo, hi + 1) for penalty, cuts in variants
            if _ordered(effective_cuts(slot, cuts))]


def _around(guess: Cut, slot_count: int | None = None) -> list[tuple[int, int]]:
    """(first, end) pairs near a predicted cut; any end at all for an open one."""
    firsts = range(guess.first - BOUNDARY_SEARCH, guess.first + BOUNDARY_SEARCH + 1)
    if guess.open_end and slot_count is not None:
        return [(first, end) for first in firsts for end in range(first + 1, slot_count + 2)]
    return [(first, end) for first in firsts
            for end in range(guess.end - BOUNDARY_SEARCH, guess.end + BOUNDARY_SEARCH + 1)]


def _place_cuts(placer: _Placer, first_slot: int, chosen: list[Cut | None],
                predicted: list[Cut | None]) -> list[Cut | None]:
    """Move each cut within +-BOUNDARY_SEARCH of its prediction to where the pictures match."""
    chosen = list(chosen)
    for index, guess in enumerate(predicted):
        if guess is None or guess.first + BOUNDARY_SEARCH <= first_slot:
            continue
        earlier = effective_cuts(first_slot, chosen[:index])
        around = guess.first - first_slot - sum(c.end - c.first for c in earlier)
        positions = placer.window(around)
        if not positions:
            continue
        candidates: list[tuple[float, Any]] = []
        for first, end in _around(guess, placer.slots.count):
            trial = [*chosen[:index], Cut(first, max(end, first + 1), guess.open_end),
                     *chosen[index + 1:]]
            if _ordered(effective_cuts(first_slot, trial)):
                penalty = TIE_PENALTY * (abs(first - guess.first) + abs(end - guess.end))
                candidates.append((penalty, trial))
        if candidates:
            chosen, _cost, _margin, _evidence = placer.best(
                candidates, positions,
                lambda trial: (first_slot, effective_cuts(first_slot, trial)))
    return chosen


def _records(slots: _Slots, numbers: IntArray, pts: IntArray, slot_of_frame: IntArray,
             file_fingerprints: npt.NDArray[np.uint8] | None, start_proven: bool = False
             ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The frames' records, and how many frames were marked uncertain for each reason."""
    doubts = _doubts(slots, slot_of_frame, file_fingerprints, start_proven)
    records: list[dict[str, Any]] = []
    previous_render: int | None = None
    previous_time = 0
    clamped = 0
    for index, (number, slot) in enumerate(zip(numbers.tolist(), slot_of_frame.tolist(),
                                               strict=True)):
        delivery = int(slots.delivery[slot]) if 0 <= slot < slots.count else -1
        render = int(slots.render[delivery]) if delivery >= 0 else slot
        own, _logged = slots.capture_ns(render)
        capture = max(own, previous_time)
        uncertain = bool(doubts[index].any())
        if capture - own > slots.interval and not uncertain:
            clamped += 1        # an earlier frame's (wrong) time pushed this one late
            uncertain = True
        repeated = previous_render is not None and render == previous_render
        dropped = 0
        contiguous = index > 0 and slot - int(slot_of_frame[index - 1]) == \
            number - int(numbers[index - 1])
        if contiguous and not repeated and previous_render is not None:
            dropped = max(0, render - previous_render - 1)
        records.append({"frame_index": index, "capture_time_ns": int(capture),
                        "grab_duration_ns": 0, "dropped_before": int(dropped),
                        "repeated": bool(repeated), "pts": int(pts[index]),
                        "time_uncertain": uncertain})
        previous_render, previous_time = render, capture
    # Each frame is counted under its first reason only.
    first = np.argmax(doubts, axis=1)
    any_doubt = doubts.any(axis=1)
    reasons = {reason: int(np.count_nonzero(any_doubt & (first == column)))
               for column, reason in enumerate(DOUBTS)}
    reasons["pushed late by an earlier frame"] = clamped
    return records, reasons


DOUBTS = ("no render tick logged", "render tick after the picture's delivery",
          "picture unlike the logged one", "picture not checked (no logged fingerprint)",
          "placement ambiguous")


def _doubts(slots: _Slots, slot_of_frame: IntArray,
            file_fingerprints: npt.NDArray[np.uint8] | None,
            start_proven: bool = False) -> npt.NDArray[np.bool_]:
    """(frames, len(DOUBTS)) booleans: why each frame's time is not established (see DOUBTS).

    `start_proven`: frame 0's slot was decided by the pictures (START_EVIDENCE), so the shift
    of the first stretch starts at 0 and can only grow.
    """
    n = len(slot_of_frame)
    doubts = np.zeros((n, len(DOUBTS)), dtype=bool)
    times = slots.times(slot_of_frame)
    doubts[:, 0] = times < 0
    inside = (slot_of_frame >= 0) & (slot_of_frame < slots.count)
    delivered = np.where(inside, slots.slot_delivered[slot_of_frame.clip(0, slots.count - 1)],
                         -1)
    doubts[:, 1] = (times >= 0) & (delivered >= 0) & (times > delivered)
    if file_fingerprints is None:
        doubts[:, 3] = True
        return doubts
    wrong = _mismatches(slots, slot_of_frame, file_fingerprints)
    logged, valid = slots.fingerprints(slot_of_frame)
    doubts[:, 2] = wrong & valid
    doubts[:, 3] = ~valid
    # A placement a few slots off that explains a frame's picture as well, where another picture
    # was logged (further than FRAME_MISMATCH from ours), leaves open which of the two the frame
    # shows. The same logged picture leaves nothing open: it was on the screen at our tick too
    # (to the fingerprint's resolution). Such a rival is ruled out by pictures elsewhere: within
    # a stretch of consecutive slots the true slot is ours + a shift that can only grow along
    # the file (a wrong frame 0 or pause edge: a constant; a frame the encoder lost: +1 from
    # there on). So a frame whose picture matches ours and no slot 1-3 before it proves the
    # shift is not negative there and at every later frame of the stretch; one that matches
    # ours and no slot 1-3 after it proves it is not positive there and at every earlier frame.
    stretch = np.concatenate(([0], np.cumsum(np.diff(slot_of_frame) != 1)))
    not_earlier, not_later = ~wrong, ~wrong
    shifts = [shift for shift in range(-ALTERNATIVE_SLOTS, ALTERNATIVE_SLOTS + 1) if shift]
    rivals: dict[int, npt.NDArray[np.bool_]] = {}
    for shift in shifts:
        other = slot_of_frame + shift
        other_wrong = _mismatches(slots, other, file_fingerprints)
        if shift < 0:
            not_earlier = not_earlier & other_wrong
        else:
            not_later = not_later & other_wrong
        other_logged, _valid = slots.fingerprints(other)
        other_times = slots.times(other)
        differ = (other_times < 0) | (times < 0) | (np.abs(other_times - times) > slots.interval)
        other_picture = fingerprint_distance(other_logged, logged) > FRAME_MISMATCH
        rivals[shift] = ~other_wrong & other_picture & differ
    proven_before = _seen_in_stretch(not_earlier, stretch) | (start_proven & (stretch == 0))
    proven_after = _seen_in_stretch(not_later[::-1], stretch[::-1])[::-1]
    for shift, rival in rivals.items():
        doubts[:, 4] |= rival & ~(proven_before if shift < 0 else proven_after)
    return doubts


def _seen_in_stretch(flags: npt.NDArray[np.bool_], stretch: IntArray) -> npt.NDArray[np.bool_]:
    """For each frame: whether a flagged frame came at or before it in its stretch."""
    seen = np.zeros(len(flags), dtype=bool)
    last_stretch, found = None, False
    for index, (flag, group) in enumerate(zip(flags.tolist(), stretch.tolist(), strict=True)):
        if group != last_stretch:
            last_stretch, found = group, False
        found = found or flag
        seen[index] = found
    return seen


def _mismatches(slots: _Slots, slot_of_frame: IntArray,
                file_fingerprints: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    """Frames whose picture is not the one logged for their slot (or no picture is logged)."""
    logged, valid = slots.fingerprints(slot_of_frame)
    return ~valid | (fingerprint_distance(file_fingerprints, logged) > FRAME_MISMATCH)


def naive_timeline(pts: Sequence[int], time_base: Fraction, started_ns: int) -> Timeline:
    """Start event time + i/fps: only for when the clock log is missing."""
    records = []
    first = pts[0] if pts else 0
    for index, p in enumerate(pts):
        capture = started_ns + round(float((p - first) * time_base) * 1e9)
        records.append({"frame_index": index, "capture_time_ns": capture, "grab_duration_ns": 0,
                        "dropped_before": 0, "repeated": False, "pts": int(p),
                        "time_uncertain": True})
    return Timeline(records=records, first_slot_ts=None, cuts=[])
